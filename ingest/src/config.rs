use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::StartError;

/// The ingest service's settings; every field has a default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest upload accepted (`Upload-Length`), in bytes.
    pub max_upload_bytes: u64,
    /// Largest JSON request body, in bytes.
    pub max_json_bytes: usize,
    /// How old a signature's `created` may be, in seconds.
    pub signature_max_age_s: u64,
    /// How far ahead of the server's clock a device's clock may run, in
    /// seconds: applies to signature `created` and to data timestamps.
    pub clock_skew_s: u64,
    /// Fastest plausible ground speed between two GNSS fixes, m/s.
    pub max_speed_mps: f64,
    /// Sustained signed requests per second allowed per device.
    pub requests_per_second: f64,
    /// Requests a device may burst above the sustained rate.
    pub request_burst: f64,
    /// `PATCH` requests a device may have in flight at once.
    pub max_concurrent_patches: usize,
    /// Created-but-unfinished uploads a device may hold at once.
    pub max_open_uploads: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 4 << 30,
            max_json_bytes: 64 << 10,
            signature_max_age_s: 300,
            clock_skew_s: 120,
            max_speed_mps: 90.0,
            requests_per_second: 50.0,
            request_burst: 200.0,
            max_concurrent_patches: 4,
            max_open_uploads: 64,
        }
    }
}

impl IngestConfig {
    /// Checks the settings, naming the first bad key.
    pub fn validate(&self) -> Result<(), StartError> {
        let bad = |key, message: &str| {
            Err(StartError::Config {
                key,
                message: message.to_owned(),
            })
        };
        if self.max_upload_bytes == 0 {
            return bad("max_upload_bytes", "must be positive");
        }
        if !(self.max_speed_mps.is_finite() && self.max_speed_mps > 0.0) {
            return bad("max_speed_mps", "must be a positive number");
        }
        if !(self.requests_per_second.is_finite() && self.requests_per_second > 0.0) {
            return bad("requests_per_second", "must be a positive number");
        }
        if !(self.request_burst.is_finite() && self.request_burst >= 1.0) {
            return bad("request_burst", "must be at least 1");
        }
        if self.max_concurrent_patches == 0 {
            return bad("max_concurrent_patches", "must be at least 1");
        }
        if self.max_open_uploads == 0 {
            return bad("max_open_uploads", "must be at least 1");
        }
        Ok(())
    }

    pub fn clock_skew(&self) -> Duration {
        Duration::from_secs(self.clock_skew_s)
    }
}
