//! What a dashcam's GNSS receiver and a telematics dongle report of a drive.

use hexroad_wire::{GnssPoint, TelemetrySample};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::drive::{STEP_S, Sample};

/// Metres per degree of latitude.
const M_PER_DEG: f64 = 111_195.0;

/// One receiver's character: how often it reports and how noisy it is.
#[derive(Debug, Clone, Copy)]
pub struct Receiver {
    pub rate_hz: u32,
    /// Baseline HDOP in open sky.
    pub base_hdop: f64,
}

impl Receiver {
    pub fn random(rng: &mut ChaCha8Rng) -> Self {
        let rates = [1, 2, 5, 10];
        Self {
            rate_hz: rates[rng.random_range(0..rates.len())],
            base_hdop: rng.random_range(0.7..1.3),
        }
    }
}

/// Samples the true drive as a receiver would: at its rate, with correlated
/// position error that grows with HDOP, and drop-outs (tunnels, urban canyons).
pub fn gnss(samples: &[Sample], receiver: Receiver, rng: &mut ChaCha8Rng) -> Vec<GnssPoint> {
    let every = ((1.0 / f64::from(receiver.rate_hz)) / STEP_S)
        .round()
        .max(1.0) as usize;
    let (mut bias_n, mut bias_e) = (0.0_f64, 0.0_f64);
    let mut dropout_left_s = 0.0_f64;
    let dt = every as f64 * STEP_S;
    let mut out = Vec::new();
    for s in samples.iter().step_by(every) {
        if dropout_left_s > 0.0 {
            dropout_left_s -= dt;
            continue;
        }
        if rng.random_bool((0.004 * dt).min(1.0)) {
            dropout_left_s = rng.random_range(2.0..8.0);
            continue;
        }
        let hdop = receiver.base_hdop + 0.4 * gauss(rng).abs();
        // A slowly wandering bias plus white noise, both scaled by HDOP.
        bias_n = 0.98 * bias_n + 0.2 * hdop * gauss(rng) * dt.sqrt();
        bias_e = 0.98 * bias_e + 0.2 * hdop * gauss(rng) * dt.sqrt();
        // Receivers filter their fixes: the error is mostly the slowly
        // wandering bias, with little jitter from one fix to the next.
        let sigma = 0.3 * hdop;
        let north = bias_n + sigma * gauss(rng);
        let east = bias_e + sigma * gauss(rng);
        let lat = s.lat + north / M_PER_DEG;
        let lon = s.lon + east / (M_PER_DEG * s.lat.to_radians().cos());
        out.push(GnssPoint {
            ts: s.ts,
            lat,
            lon,
            alt: Some(15.0 + 2.0 * gauss(rng)),
            speed: Some((s.speed + 0.1 * gauss(rng)).max(0.0)),
            heading: Some((s.heading + 2.0 * gauss(rng)).rem_euclid(360.0)),
            hdop: Some((hdop * 10.0).round() / 10.0),
        });
    }
    out
}

fn gauss(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

/// The vehicle's state that telemetry continues from one segment to the next.
#[derive(Debug, Clone, Copy)]
pub struct Vehicle {
    pub odometer_km: f64,
    pub state_of_charge: f64,
    /// Percent of charge per km.
    pub consumption: f64,
    /// Speedometers read a little high.
    pub speedo_factor: f64,
}

impl Vehicle {
    pub fn random(rng: &mut ChaCha8Rng) -> Self {
        Self {
            odometer_km: rng.random_range(5_000.0..150_000.0),
            state_of_charge: rng.random_range(45.0..95.0),
            consumption: rng.random_range(0.18..0.3),
            speedo_factor: rng.random_range(1.0..1.04),
        }
    }
}

/// VSS signals at 1 Hz, consistent with the drive: speed, odometer, state of
/// charge falling with distance, position and motion.
pub fn telemetry(samples: &[Sample], vehicle: &mut Vehicle) -> Vec<TelemetrySample> {
    let every = (1.0 / STEP_S).round() as usize;
    let start_km = vehicle.odometer_km;
    let start_soc = vehicle.state_of_charge;
    let mut out = Vec::new();
    let mut last = None;
    for s in samples.iter().step_by(every) {
        let km = s.distance_m / 1000.0;
        vehicle.odometer_km = start_km + km;
        vehicle.state_of_charge = (start_soc - km * vehicle.consumption).max(0.0);
        let sig = |signal: &str, value: f64| TelemetrySample {
            ts: s.ts,
            signal: signal.to_owned(),
            value,
        };
        out.push(sig(
            "Vehicle.Speed",
            (s.speed * 3.6 * vehicle.speedo_factor * 10.0).round() / 10.0,
        ));
        out.push(sig(
            "Vehicle.TraveledDistance",
            (vehicle.odometer_km * 1000.0).round() / 1000.0,
        ));
        out.push(sig(
            "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current",
            (vehicle.state_of_charge * 100.0).round() / 100.0,
        ));
        out.push(sig("Vehicle.CurrentLocation.Latitude", s.lat));
        out.push(sig("Vehicle.CurrentLocation.Longitude", s.lon));
        out.push(sig(
            "Vehicle.IsMoving",
            if s.speed > 0.2 { 1.0 } else { 0.0 },
        ));
        if let Some(prev) = last {
            let prev: &Sample = prev;
            let dt = (s.ts - prev.ts).as_seconds_f64();
            out.push(sig(
                "Vehicle.Acceleration.Longitudinal",
                ((s.speed - prev.speed) / dt * 100.0).round() / 100.0,
            ));
        }
        last = Some(s);
    }
    out
}

/// NDJSON text of a telemetry batch.
pub fn to_ndjson(samples: &[TelemetrySample]) -> String {
    let mut out = String::new();
    for s in samples {
        let line = hexroad_wire::vss::TelemetryLine {
            ts: s.ts,
            signal: s.signal.clone(),
            value: s.value,
        };
        if let Ok(json) = serde_json::to_string(&line) {
            out.push_str(&json);
            out.push('\n');
        }
    }
    out
}

/// Turns an honest track into a spoofer's: halfway through, the position
/// jumps several kilometres (a teleport no car could make).
pub fn spoof(points: &mut [GnssPoint], rng: &mut ChaCha8Rng) {
    let half = points.len() / 2;
    let (dlat, dlon) = (rng.random_range(0.04..0.08), rng.random_range(-0.08..0.08));
    for p in &mut points[half..] {
        p.lat += dlat;
        p.lon += dlon;
    }
}
