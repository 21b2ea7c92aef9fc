use std::time::Duration;

use serde::{Deserialize, Serialize};

use hexroad_wire::settings::{SettingError, require};

/// The ingest service's settings; every field has a default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest upload accepted (`Upload-Length`), in bytes.
    pub max_upload_bytes: u64,
    /// Largest JSON request body, in bytes.
    pub max_json_bytes: usize,
    /// How old a signature's `created` may be.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub signature_max_age: Duration,
    /// How far ahead of the server's clock a device's clock may run:
    /// applies to signature `created` and to data timestamps.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub clock_skew: Duration,
    /// Fastest plausible ground speed between two GNSS fixes, m/s.
    pub max_speed_mps: f64,
    /// Sustained signed requests per second allowed per device.
    pub requests_per_second: f64,
    /// Requests a device may burst above the sustained rate.
    pub request_burst: f64,
    /// New devices the whole service registers per second, sustained: keys
    /// cost nothing to make, so this bounds how fast anyone can add devices.
    pub registrations_per_second: f64,
    /// Registrations allowed in a burst above that rate.
    pub registration_burst: f64,
    /// `PATCH` requests a device may have in flight at once.
    pub max_concurrent_patches: usize,
    /// Created-but-unfinished uploads a device may hold at once.
    pub max_open_uploads: usize,
    /// The most one upload's media may hold.
    pub media: MediaLimits,
}

/// The most one upload's media may hold, checked at ingest from headers
/// before anything is decoded, so a small file cannot declare a huge picture
/// (a 23000×23000 JPEG) or a tar cannot expand to gigabytes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MediaLimits {
    /// Widest picture, pixels (video or frame).
    pub max_width: u32,
    /// Tallest picture, pixels.
    pub max_height: u32,
    /// Most pixels in one picture.
    pub max_pixels: u64,
    /// Longest video.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub max_video_duration: Duration,
    /// Highest average video bitrate, bits per second.
    pub max_video_bitrate: u64,
    /// Most frames in one video or bundle.
    pub max_frames: u64,
    /// Largest JPEG in a frame bundle, bytes.
    pub max_image_bytes: u64,
    /// Largest track or telemetry file (alone or in a bundle), bytes.
    pub max_text_bytes: u64,
}

impl Default for MediaLimits {
    fn default() -> Self {
        Self {
            max_width: 7680,
            max_height: 4320,
            max_pixels: 7680 * 4320,
            max_video_duration: Duration::from_secs(30 * 60),
            max_video_bitrate: 100_000_000,
            max_frames: 100_000,
            max_image_bytes: 16 << 20,
            max_text_bytes: 256 << 20,
        }
    }
}

impl MediaLimits {
    /// Refuses a picture larger than the limits, naming the limit.
    pub fn check_picture(&self, width: u64, height: u64) -> Result<(), String> {
        if width > u64::from(self.max_width) || height > u64::from(self.max_height) {
            return Err(format!(
                "{width}×{height} exceeds the limit of {}×{}",
                self.max_width, self.max_height
            ));
        }
        if width.saturating_mul(height) > self.max_pixels {
            return Err(format!(
                "{width}×{height} exceeds the limit of {} pixels",
                self.max_pixels
            ));
        }
        Ok(())
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 4 << 30,
            max_json_bytes: 64 << 10,
            signature_max_age: Duration::from_secs(300),
            clock_skew: Duration::from_secs(120),
            max_speed_mps: 90.0,
            requests_per_second: 50.0,
            request_burst: 200.0,
            registrations_per_second: 2.0,
            registration_burst: 100.0,
            max_concurrent_patches: 4,
            max_open_uploads: 64,
            media: MediaLimits::default(),
        }
    }
}

impl IngestConfig {
    /// Checks the settings, naming the first bad key.
    pub fn validate(&self) -> Result<(), SettingError> {
        require(
            self.max_upload_bytes > 0,
            "max_upload_bytes",
            "must be positive",
        )?;
        require(
            self.signature_max_age >= Duration::from_secs(1),
            "signature_max_age",
            "must be at least a second",
        )?;
        require(
            self.clock_skew <= Duration::from_secs(86_400),
            "clock_skew",
            "must be at most a day",
        )?;
        require(
            self.max_speed_mps.is_finite() && self.max_speed_mps > 0.0,
            "max_speed_mps",
            "must be a positive number",
        )?;
        require(
            self.requests_per_second.is_finite() && self.requests_per_second > 0.0,
            "requests_per_second",
            "must be a positive number",
        )?;
        require(
            self.request_burst.is_finite() && self.request_burst >= 1.0,
            "request_burst",
            "must be at least 1",
        )?;
        require(
            self.max_concurrent_patches > 0,
            "max_concurrent_patches",
            "must be at least 1",
        )?;
        require(
            self.max_open_uploads > 0,
            "max_open_uploads",
            "must be at least 1",
        )?;
        require(
            self.registrations_per_second.is_finite() && self.registrations_per_second > 0.0,
            "registrations_per_second",
            "must be a positive number",
        )?;
        require(
            self.registration_burst.is_finite() && self.registration_burst >= 1.0,
            "registration_burst",
            "must be at least 1",
        )?;
        let m = &self.media;
        require(m.max_width > 0, "media.max_width", "must be positive")?;
        require(m.max_height > 0, "media.max_height", "must be positive")?;
        require(m.max_pixels > 0, "media.max_pixels", "must be positive")?;
        require(m.max_frames > 0, "media.max_frames", "must be positive")?;
        require(
            m.max_text_bytes > 0 && m.max_image_bytes > 0,
            "media.max_text_bytes",
            "byte limits must be positive",
        )
    }

    /// Seconds a signature stays good: its age limit plus the skew allowed.
    pub fn signature_window_s(&self) -> u64 {
        self.signature_max_age.as_secs() + self.clock_skew.as_secs()
    }
}
