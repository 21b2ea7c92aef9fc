//! The samples a device sends, as Rust values before they become rows.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a device uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadKind {
    /// Dashcam video, MP4 with H.264.
    Video,
    /// A GNSS track, GPX 1.1 or NMEA 0183.
    Gnss,
    /// A tar bundle of JPEG frames with a GNSS track.
    Frames,
    /// NDJSON of COVESA VSS signals.
    Telemetry,
}

impl UploadKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [Self; 4] = [Self::Video, Self::Gnss, Self::Frames, Self::Telemetry];

    /// The name devices declare and the `uploads.kind` column holds.
    ///
    /// ```
    /// use hexroad_wire::UploadKind;
    /// assert_eq!(UploadKind::parse(UploadKind::Frames.as_str()), Some(UploadKind::Frames));
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Video => "video",
            Self::Gnss => "gnss",
            Self::Frames => "frames",
            Self::Telemetry => "telemetry",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the vision stage turns this kind of upload into frames.
    pub fn has_pictures(self) -> bool {
        matches!(self, Self::Video | Self::Frames)
    }
}

/// One GNSS fix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GnssPoint {
    pub ts: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    pub alt: Option<f64>,
    /// Metres per second over ground.
    pub speed: Option<f64>,
    /// Degrees clockwise from true north.
    pub heading: Option<f64>,
    pub hdop: Option<f64>,
}

/// One vehicle signal sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetrySample {
    pub ts: DateTime<Utc>,
    /// A COVESA VSS path, e.g. `Vehicle.Speed`.
    pub signal: String,
    pub value: f64,
}
