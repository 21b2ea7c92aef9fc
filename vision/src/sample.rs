//! Where each frame was taken, and which frames are worth keeping.
//!
//! Frame positions are interpolated along the drive's GNSS track. One frame is
//! kept every `spacing` metres travelled (mapillary_tools' default is 3 m);
//! distance comes from the receiver's speed where it reports one, so GNSS
//! jitter while parked does not add up to "travel".

use chrono::{DateTime, Utc};
use hexroad_wire::GnssPoint;
use hexroad_wire::grid::{bearing_deg, haversine_m};

/// Position and motion of the camera at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    pub ts: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    /// Degrees clockwise from north.
    pub heading: f64,
    /// Metres per second.
    pub speed: f64,
}

/// A drive's GNSS fixes, in time order.
#[derive(Debug, Clone)]
pub struct Track {
    points: Vec<GnssPoint>,
}

/// The smaller angle between two headings, 0–180.
pub fn angle_between(a: f64, b: f64) -> f64 {
    let d = (a - b).rem_euclid(360.0);
    d.min(360.0 - d)
}

impl Track {
    pub fn new(mut points: Vec<GnssPoint>) -> Self {
        points.sort_by_key(|p| p.ts);
        points.dedup_by_key(|p| p.ts);
        Self { points }
    }

    pub fn points(&self) -> &[GnssPoint] {
        &self.points
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    pub fn start(&self) -> Option<DateTime<Utc>> {
        self.points.first().map(|p| p.ts)
    }

    pub fn end(&self) -> Option<DateTime<Utc>> {
        self.points.last().map(|p| p.ts)
    }

    /// The pose at `ts`, or `None` outside the track (or across a gap longer
    /// than `max_gap_s`, where any position would be a guess).
    pub fn at(&self, ts: DateTime<Utc>, max_gap_s: f64) -> Option<Pose> {
        let i = self.points.partition_point(|p| p.ts <= ts);
        if i == 0 {
            return None;
        }
        let a = &self.points[i - 1];
        if a.ts == ts || i == self.points.len() {
            if a.ts != ts {
                return None;
            }
            let b = self
                .points
                .get(i)
                .or_else(|| i.checked_sub(2).map(|j| &self.points[j]));
            return Some(self.pose_between(a, b.unwrap_or(a), 0.0, ts));
        }
        let b = &self.points[i];
        let span = (b.ts - a.ts).as_seconds_f64();
        if span > max_gap_s {
            return None;
        }
        let f = (ts - a.ts).as_seconds_f64() / span;
        Some(self.pose_between(a, b, f, ts))
    }

    fn pose_between(&self, a: &GnssPoint, b: &GnssPoint, f: f64, ts: DateTime<Utc>) -> Pose {
        let lat = a.lat + (b.lat - a.lat) * f;
        let lon = a.lon + (b.lon - a.lon) * f;
        let dist = haversine_m((a.lat, a.lon), (b.lat, b.lon));
        let dt = (b.ts - a.ts).as_seconds_f64().abs();
        let derived_speed = if dt > 0.0 { dist / dt } else { 0.0 };
        let speed = match (a.speed, b.speed) {
            (Some(sa), Some(sb)) => sa + (sb - sa) * f,
            (Some(s), None) | (None, Some(s)) => s,
            (None, None) => derived_speed,
        };
        let (from, to) = if b.ts >= a.ts { (a, b) } else { (b, a) };
        let heading = match (a.heading, b.heading) {
            (Some(ha), Some(hb)) => {
                let d = ((hb - ha + 540.0) % 360.0) - 180.0;
                (ha + d * f).rem_euclid(360.0)
            }
            _ if dist > 0.5 => bearing_deg((from.lat, from.lon), (to.lat, to.lon)),
            _ => a.heading.or(b.heading).unwrap_or(0.0),
        };
        Pose {
            ts,
            lat,
            lon,
            heading,
            speed,
        }
    }
}

/// Picks one frame per `spacing` metres travelled.
#[derive(Debug, Clone)]
pub struct Sampler {
    spacing_m: f64,
    travelled_m: f64,
    last: Option<Pose>,
    /// Below this speed the camera is taken to be standing still.
    still_mps: f64,
}

impl Sampler {
    pub fn new(spacing_m: f64) -> Self {
        Self {
            spacing_m,
            travelled_m: spacing_m, // the first frame with a position is taken
            last: None,
            still_mps: 0.5,
        }
    }

    /// Feeds the next frame's pose; true if it is due.
    pub fn due(&mut self, pose: &Pose) -> bool {
        if let Some(last) = self.last {
            let dt = (pose.ts - last.ts).as_seconds_f64().max(0.0);
            let speed = if pose.speed < self.still_mps {
                0.0
            } else {
                pose.speed
            };
            self.travelled_m += speed * dt;
        }
        self.last = Some(*pose);
        if self.travelled_m >= self.spacing_m {
            self.travelled_m = 0.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn fix(s: i64, lat: f64, lon: f64, speed: f64) -> GnssPoint {
        GnssPoint {
            ts: Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap(),
            lat,
            lon,
            alt: None,
            speed: Some(speed),
            heading: None,
            hdop: Some(1.0),
        }
    }

    #[test]
    fn positions_interpolate_and_stop_at_the_ends() {
        let t = Track::new(vec![fix(0, 60.0, 25.0, 10.0), fix(10, 60.001, 25.0, 10.0)]);
        let mid = t
            .at(Utc.timestamp_opt(1_700_000_005, 0).unwrap(), 30.0)
            .unwrap();
        assert!((mid.lat - 60.0005).abs() < 1e-9);
        assert!(
            mid.heading < 1.0 || mid.heading > 359.0,
            "northbound: {}",
            mid.heading
        );
        assert!(
            t.at(Utc.timestamp_opt(1_699_999_999, 0).unwrap(), 30.0)
                .is_none()
        );
        assert!(
            t.at(Utc.timestamp_opt(1_700_000_011, 0).unwrap(), 30.0)
                .is_none()
        );
        assert!(
            t.at(Utc.timestamp_opt(1_700_000_005, 0).unwrap(), 5.0)
                .is_none(),
            "gap too long"
        );
    }

    #[test]
    fn one_frame_per_spacing_and_none_while_standing() {
        let mut s = Sampler::new(3.0);
        let pose = |ms: i64, speed: f64| Pose {
            ts: Utc.timestamp_millis_opt(ms).unwrap(),
            lat: 60.0,
            lon: 25.0,
            heading: 0.0,
            speed,
        };
        // 10 m/s at 30 fps for 3 s: 30 m → 10 frames.
        let moving = (0..90)
            .filter(|i| s.due(&pose(i * 1000 / 30, 10.0)))
            .count();
        assert!((10..=11).contains(&moving), "{moving}");
        // Standing for a minute (GNSS speed noise of 0.3 m/s): nothing.
        let still = (90..1890)
            .filter(|i| s.due(&pose(i * 1000 / 30, 0.3)))
            .count();
        assert_eq!(still, 0);
    }

    #[test]
    fn angles_wrap() {
        assert_eq!(angle_between(350.0, 10.0), 20.0);
        assert_eq!(angle_between(90.0, 270.0), 180.0);
        assert!((haversine_m((60.0, 25.0), (60.001, 25.0)) - 111.2).abs() < 0.5);
    }
}
