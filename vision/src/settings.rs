//! The vision stage's settings (`[vision]` in the settings file).

use std::path::PathBuf;
use std::time::Duration;

use hexroad_wire::settings::{SettingError, require};
use serde::{Deserialize, Serialize};

use crate::{DetectorConfig, MaskConfig};

/// Settings of the vision stage (`[vision]` in the settings file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisionConfig {
    /// Run the worker inside `hexroad serve`.
    pub enabled: bool,
    /// `libonnxruntime.so` from the set-up.
    pub runtime: PathBuf,
    pub detectors: Vec<DetectorConfig>,
    pub mask: MaskConfig,
    /// Keep one frame per this many metres travelled.
    pub sample_distance_m: f64,
    /// A frame this close to the last kept one, facing the same way, adds nothing.
    pub still_distance_m: f64,
    pub still_angle_deg: f64,
    /// Perceptual-hash bits two frames may differ by and still be duplicates.
    pub phash_max_bits: u32,
    /// H3 resolution of the neighbourhood searched for near-duplicates.
    pub dedupe_resolution: u8,
    /// How far back near-duplicates are searched.
    pub dedupe_window_days: i64,
    pub jpeg_quality: u8,
    /// Most pixels in one picture decoded (a frame bundle's JPEG); larger is
    /// rejected from its header, before any pixel buffer is allocated.
    pub max_pixels: u64,
    /// Claims that may lapse on an upload without a verdict (the worker died
    /// or stalled) before it is marked failed and not tried again.
    pub max_attempts: u32,
    /// What decoding one uploaded video may use, in its child process.
    pub decode: crate::cage::DecodeLimits,
    /// The program whose `decode-video` subcommand decodes uploaded video
    /// in a caged child process; the `hexroad` binary sets itself here.
    /// `None` decodes in this process (library tests, the offline tool).
    #[serde(skip)]
    pub decoder: Option<std::path::PathBuf>,
    /// Within this many metres of where a drive began or ended (homes) no
    /// frame is published. Set from `[privacy] radius_m`.
    #[serde(skip)]
    pub privacy_radius_m: f64,
    /// How long a claim holds an upload against other workers.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub lease: Duration,
    /// How long a video waits for its GNSS track before it is rejected.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub track_wait: Duration,
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub poll_interval: Duration,
    /// Longest gap between fixes across which a position is interpolated.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub max_track_gap: Duration,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            runtime: PathBuf::from("datasets/libonnxruntime.so"),
            detectors: vec![
                DetectorConfig::centerface("datasets/centerface.onnx"),
                DetectorConfig::plates("datasets/plates.onnx"),
            ],
            mask: MaskConfig::default(),
            sample_distance_m: 3.0,
            still_distance_m: 2.0,
            still_angle_deg: 20.0,
            phash_max_bits: 8,
            dedupe_resolution: 11,
            dedupe_window_days: 30,
            jpeg_quality: 85,
            privacy_radius_m: 500.0,
            lease: Duration::from_secs(600),
            max_attempts: 3,
            decode: crate::cage::DecodeLimits::default(),
            decoder: None,
            max_pixels: 7680 * 4320,
            track_wait: Duration::from_secs(600),
            poll_interval: Duration::from_secs(2),
            max_track_gap: Duration::from_secs(5),
        }
    }
}

impl VisionConfig {
    /// Checks values a typo could make absurd, naming the bad key.
    pub fn validate(&self) -> std::result::Result<(), SettingError> {
        require(
            self.sample_distance_m > 0.0,
            "sample_distance_m",
            "must be > 0",
        )?;
        require(
            self.dedupe_resolution <= 15,
            "dedupe_resolution",
            "must be 0–15",
        )?;
        require(self.phash_max_bits <= 32, "phash_max_bits", "must be ≤ 32")?;
        require(
            (1..=100).contains(&self.jpeg_quality),
            "jpeg_quality",
            "must be 1–100",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_validate_and_defaults_are_sane() {
        assert!(VisionConfig::default().validate().is_ok());
        let bad = VisionConfig {
            sample_distance_m: 0.0,
            ..VisionConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().key, "sample_distance_m");
    }
}
