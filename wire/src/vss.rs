//! COVESA VSS signals hexroad accepts, with their units and plausible ranges.
//!
//! Paths and units follow VSS 4.x as DIMO uses them. A signal outside this
//! catalogue is refused at ingest rather than stored unexamined.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::TelemetrySample;

/// One known signal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signal {
    pub path: &'static str,
    pub unit: &'static str,
    pub min: f64,
    pub max: f64,
}

/// The signals hexroad knows.
pub const SIGNALS: &[Signal] = &[
    Signal {
        path: "Vehicle.Speed",
        unit: "km/h",
        min: -60.0,
        max: 400.0,
    },
    Signal {
        path: "Vehicle.TraveledDistance",
        unit: "km",
        min: 0.0,
        max: 5_000_000.0,
    },
    Signal {
        path: "Vehicle.IsMoving",
        unit: "bool",
        min: 0.0,
        max: 1.0,
    },
    Signal {
        path: "Vehicle.CurrentLocation.Latitude",
        unit: "degrees",
        min: -90.0,
        max: 90.0,
    },
    Signal {
        path: "Vehicle.CurrentLocation.Longitude",
        unit: "degrees",
        min: -180.0,
        max: 180.0,
    },
    Signal {
        path: "Vehicle.CurrentLocation.Altitude",
        unit: "m",
        min: -500.0,
        max: 9_000.0,
    },
    Signal {
        path: "Vehicle.CurrentLocation.Heading",
        unit: "degrees",
        min: 0.0,
        max: 360.0,
    },
    Signal {
        path: "Vehicle.Acceleration.Longitudinal",
        unit: "m/s^2",
        min: -30.0,
        max: 30.0,
    },
    Signal {
        path: "Vehicle.Acceleration.Lateral",
        unit: "m/s^2",
        min: -30.0,
        max: 30.0,
    },
    Signal {
        path: "Vehicle.Exterior.AirTemperature",
        unit: "celsius",
        min: -60.0,
        max: 70.0,
    },
    Signal {
        path: "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current",
        unit: "percent",
        min: 0.0,
        max: 100.0,
    },
    Signal {
        path: "Vehicle.Powertrain.TractionBattery.CurrentPower",
        unit: "W",
        min: -500_000.0,
        max: 500_000.0,
    },
    Signal {
        path: "Vehicle.Powertrain.Range",
        unit: "m",
        min: 0.0,
        max: 3_000_000.0,
    },
    Signal {
        path: "Vehicle.Powertrain.FuelSystem.RelativeLevel",
        unit: "percent",
        min: 0.0,
        max: 100.0,
    },
    Signal {
        path: "Vehicle.Powertrain.CombustionEngine.Speed",
        unit: "rpm",
        min: 0.0,
        max: 20_000.0,
    },
    Signal {
        path: "Vehicle.Chassis.SteeringWheel.Angle",
        unit: "degrees",
        min: -1_000.0,
        max: 1_000.0,
    },
    Signal {
        path: "Vehicle.Chassis.Axle.Row1.Wheel.Left.Tire.Pressure",
        unit: "kPa",
        min: 0.0,
        max: 1_000.0,
    },
    Signal {
        path: "Vehicle.OBD.EngineLoad",
        unit: "percent",
        min: 0.0,
        max: 100.0,
    },
];

/// The catalogue entry for `path`.
pub fn lookup(path: &str) -> Option<&'static Signal> {
    SIGNALS.iter().find(|s| s.path == path)
}

/// One NDJSON line of a telemetry batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryLine {
    pub ts: DateTime<Utc>,
    pub signal: String,
    pub value: f64,
}

/// Why a telemetry batch was refused, with its line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct TelemetryError {
    pub line: usize,
    /// `unknown_signal`, `out_of_range` or `malformed`.
    pub code: &'static str,
    pub message: String,
}

/// Parses an NDJSON telemetry batch, refusing unknown signals and values
/// outside their signal's range. Time checks are the caller's.
pub fn parse_ndjson(bytes: &[u8]) -> Result<Vec<TelemetrySample>, TelemetryError> {
    let mut out = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let parsed: TelemetryLine = serde_json::from_slice(raw).map_err(|e| TelemetryError {
            line,
            code: "malformed",
            message: format!("not a telemetry line ({{\"ts\", \"signal\", \"value\"}}): {e}"),
        })?;
        let signal = lookup(&parsed.signal).ok_or_else(|| TelemetryError {
            line,
            code: "unknown_signal",
            message: format!("unknown VSS signal {:?}", parsed.signal),
        })?;
        if !(signal.min..=signal.max).contains(&parsed.value) {
            return Err(TelemetryError {
                line,
                code: "out_of_range",
                message: format!(
                    "{} = {} {} is outside {}..={}",
                    signal.path, parsed.value, signal.unit, signal.min, signal.max
                ),
            });
        }
        out.push(TelemetrySample {
            ts: parsed.ts,
            signal: parsed.signal,
            value: parsed.value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Issue 14: telemetry is a stranger's bytes; any of them are read
        /// or refused, never a panic.
        #[test]
        fn any_bytes_are_read_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_ndjson(&bytes);
        }

        #[test]
        fn damaged_lines_are_read_or_refused(
            ts in ".{0,40}", signal in "[A-Za-z.]{0,60}", value in ".{0,20}"
        ) {
            let line = format!("{{\"ts\":\"{ts}\",\"signal\":\"{signal}\",\"value\":{value}}}\n");
            let _ = parse_ndjson(line.as_bytes());
        }
    }

    #[test]
    fn accepts_known_signals() {
        let text = br#"{"ts":"2026-11-01T08:00:00Z","signal":"Vehicle.Speed","value":42.0}
{"ts":"2026-11-01T08:00:01Z","signal":"Vehicle.Powertrain.TractionBattery.StateOfCharge.Current","value":80.5}
"#;
        let rows = parse_ndjson(text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].value, 80.5);
    }

    #[test]
    fn refuses_unknown_signal_with_its_line() {
        let text = br#"{"ts":"2026-11-01T08:00:00Z","signal":"Vehicle.Speed","value":42.0}
{"ts":"2026-11-01T08:00:01Z","signal":"Vehicle.WarpDrive","value":9}"#;
        let e = parse_ndjson(text).unwrap_err();
        assert_eq!((e.line, e.code), (2, "unknown_signal"));
    }

    #[test]
    fn refuses_out_of_range() {
        let text = br#"{"ts":"2026-11-01T08:00:00Z","signal":"Vehicle.Powertrain.TractionBattery.StateOfCharge.Current","value":140}"#;
        assert_eq!(parse_ndjson(text).unwrap_err().code, "out_of_range");
    }
}
