use std::time::Duration;

use serde::{Deserialize, Serialize};

use hexroad_wire::settings::{SettingError, require};

/// The ingest service's settings; every field has a default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// The `host[:port]` devices reach this service at. Every signature
    /// must cover `@authority` with this value, so a request signed for one
    /// deployment cannot be replayed against another. `hexroad serve` fills
    /// it from `tiles.public_url` or the listen address when empty.
    pub public_authority: String,
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
    /// New devices one source address registers per second, sustained, and
    /// in a burst: one host cannot use up the service's rate.
    pub address_registrations_per_second: f64,
    pub address_registration_burst: f64,
    /// New devices one contributor registers per second, sustained, and in
    /// a burst: one account cannot mint devices without end.
    pub contributor_registrations_per_second: f64,
    pub contributor_registration_burst: f64,
    /// `PATCH` requests a device may have in flight at once.
    pub max_concurrent_patches: usize,
    /// Created-but-unfinished uploads a device may hold at once.
    pub max_open_uploads: usize,
    /// Bytes a device's unfinished uploads may declare in all
    /// (`Upload-Length` is reserved at creation).
    pub max_device_staged_bytes: u64,
    /// Bytes all unfinished uploads may declare in all.
    pub max_staged_bytes: u64,
    /// How long an unfinished upload is kept after its creation
    /// (`Upload-Expires`); the sweeper removes it after that.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub upload_expiry: Duration,
    /// How long a `PATCH` body may go silent before the chunk is dropped
    /// and the upload released for the device to resume.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub body_idle_timeout: Duration,
    /// How often expired and revoked staging and orphaned raw objects are
    /// swept.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub sweep_interval: Duration,
    /// Nonces held against replays, all devices together; past this,
    /// signed requests are refused (429) until old ones age out.
    pub max_held_nonces: usize,
    /// Who may register: `open` (any key; an account with a key still
    /// needs its signature) or `attested` (a trusted manufacturer's
    /// signature over the device key, and the contributor's binding).
    pub registration: RegistrationMode,
    /// Trusted manufacturers: a name, and the hex of its ed25519 public key.
    pub manufacturers: std::collections::BTreeMap<String, String>,
    /// Privacy zones one contributor may hold at once.
    pub max_privacy_zones: usize,
    /// The largest privacy zone's radius, metres.
    pub max_zone_radius_m: f64,
    /// The most one upload's media may hold.
    pub media: MediaLimits,
}

/// Who may register a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationMode {
    /// Any key may register; proofs are checked when given.
    Open,
    /// Only keys a trusted manufacturer attested, bound by their contributor.
    Attested,
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
            public_authority: String::new(),
            max_upload_bytes: 4 << 30,
            max_json_bytes: 64 << 10,
            signature_max_age: Duration::from_secs(300),
            clock_skew: Duration::from_secs(120),
            max_speed_mps: 90.0,
            requests_per_second: 50.0,
            request_burst: 200.0,
            registrations_per_second: 2.0,
            registration_burst: 100.0,
            address_registrations_per_second: 0.2,
            address_registration_burst: 50.0,
            contributor_registrations_per_second: 1.0 / 60.0,
            contributor_registration_burst: 20.0,
            max_concurrent_patches: 4,
            max_open_uploads: 64,
            max_device_staged_bytes: 16 << 30,
            max_staged_bytes: 512 << 30,
            upload_expiry: Duration::from_secs(3 * 86_400),
            body_idle_timeout: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(600),
            max_held_nonces: 1_000_000,
            registration: RegistrationMode::Open,
            manufacturers: std::collections::BTreeMap::new(),
            max_privacy_zones: 10,
            max_zone_radius_m: 2000.0,
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
        for (name, key) in &self.manufacturers {
            require(
                hexroad_wire::enrol::public_key_from_hex(key).is_some(),
                "manufacturers",
                &format!("{name}: must be 64 lowercase hex digits (an ed25519 public key)"),
            )?;
        }
        require(
            self.registration == RegistrationMode::Open || !self.manufacturers.is_empty(),
            "registration",
            "attested registration needs at least one key in manufacturers",
        )?;
        require(
            self.max_zone_radius_m.is_finite()
                && self.max_zone_radius_m >= crate::zones::MIN_ZONE_RADIUS_M,
            "max_zone_radius_m",
            "must be at least 50 metres",
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
        require(
            !self.public_authority.contains(['/', ' ', '@']),
            "public_authority",
            "must be host[:port], without scheme or path",
        )?;
        require(
            self.max_device_staged_bytes >= self.max_upload_bytes.min(self.max_staged_bytes),
            "max_device_staged_bytes",
            "must hold at least one upload of max_upload_bytes",
        )?;
        require(
            self.max_staged_bytes >= self.max_device_staged_bytes,
            "max_staged_bytes",
            "must be at least max_device_staged_bytes",
        )?;
        require(
            self.upload_expiry >= Duration::from_secs(60),
            "upload_expiry",
            "must be at least a minute",
        )?;
        require(
            self.body_idle_timeout >= Duration::from_millis(100),
            "body_idle_timeout",
            "must be at least 100ms",
        )?;
        require(
            self.sweep_interval >= Duration::from_secs(1),
            "sweep_interval",
            "must be at least a second",
        )?;
        require(
            self.max_held_nonces >= 1,
            "max_held_nonces",
            "must be at least 1",
        )?;
        for (key, rate, burst) in [
            (
                "address_registrations_per_second",
                self.address_registrations_per_second,
                self.address_registration_burst,
            ),
            (
                "contributor_registrations_per_second",
                self.contributor_registrations_per_second,
                self.contributor_registration_burst,
            ),
        ] {
            require(
                rate.is_finite() && rate > 0.0 && burst.is_finite() && burst >= 1.0,
                key,
                "must be a positive rate, with a burst of at least 1",
            )?;
        }
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
