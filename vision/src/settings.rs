//! The vision stage's settings (`[vision]` in the settings file).

use std::path::PathBuf;
use std::time::Duration;

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
    /// How long a claim holds an upload against other workers.
    #[serde(with = "hexroad_lake::duration_text")]
    pub lease: Duration,
    /// How long a video waits for its GNSS track before it is rejected.
    #[serde(with = "hexroad_lake::duration_text")]
    pub track_wait: Duration,
    #[serde(with = "hexroad_lake::duration_text")]
    pub poll_interval: Duration,
    /// Longest gap between fixes across which a position is interpolated.
    pub max_track_gap_s: f64,
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
            lease: Duration::from_secs(600),
            track_wait: Duration::from_secs(600),
            poll_interval: Duration::from_secs(2),
            max_track_gap_s: 5.0,
        }
    }
}

impl VisionConfig {
    /// Checks values a typo could make absurd; names the bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.sample_distance_m.is_nan() || self.sample_distance_m <= 0.0 {
            return Err("vision.sample_distance_m must be > 0".into());
        }
        if self.dedupe_resolution > 15 {
            return Err("vision.dedupe_resolution must be 0–15".into());
        }
        if self.phash_max_bits > 32 {
            return Err("vision.phash_max_bits must be ≤ 32".into());
        }
        if self.jpeg_quality == 0 || self.jpeg_quality > 100 {
            return Err("vision.jpeg_quality must be 1–100".into());
        }
        Ok(())
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
        assert!(bad.validate().unwrap_err().contains("sample_distance_m"));
    }
}
