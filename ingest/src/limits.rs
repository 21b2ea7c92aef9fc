//! Per-device request rate (a token bucket) and concurrency limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hexroad_wire::DeviceId;

use crate::ApiError;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.updated = now;
    }

    /// Takes one token, or says how many seconds until one is there.
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> Result<(), u64> {
        self.refill(now, rate, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - self.tokens) / rate).ceil() as u64)
        }
    }
}

/// Buckets kept before full ones (idle devices) are forgotten: a full
/// bucket is what a new one would be, so forgetting it changes nothing.
const KEPT_BUCKETS: usize = 100_000;

/// Rate and concurrency limits for every device.
pub struct Limits {
    rate: f64,
    burst: f64,
    max_patches: usize,
    buckets: Mutex<HashMap<DeviceId, Bucket>>,
    /// One bucket for all registrations: keys are free to make, so the
    /// rate of new devices is limited for the whole service.
    registration: Mutex<Bucket>,
    registration_rate: f64,
    registration_burst: f64,
    patches: Arc<Mutex<HashMap<DeviceId, usize>>>,
}

/// Releases a device's concurrent-`PATCH` slot when dropped.
pub struct PatchSlot {
    device: DeviceId,
    patches: Arc<Mutex<HashMap<DeviceId, usize>>>,
}

impl Drop for PatchSlot {
    fn drop(&mut self) {
        let mut map = self.patches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.device) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.device);
            }
        }
    }
}

impl Limits {
    pub fn new(
        (rate, burst): (f64, f64),
        max_patches: usize,
        (registration_rate, registration_burst): (f64, f64),
    ) -> Self {
        Self {
            rate,
            burst,
            max_patches,
            buckets: Mutex::new(HashMap::new()),
            registration: Mutex::new(Bucket::full(registration_burst, Instant::now())),
            registration_rate,
            registration_burst,
            patches: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes one request token, or says how long to wait for one.
    pub fn take_request(&self, device: &DeviceId, now: Instant) -> Result<(), ApiError> {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= KEPT_BUCKETS {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| {
                b.refill(now, rate, burst);
                b.tokens < burst
            });
        }
        let bucket = map
            .entry(device.clone())
            .or_insert_with(|| Bucket::full(self.burst, now));
        if let Err(wait) = bucket.take(now, self.rate, self.burst) {
            return Err(ApiError::too_many(
                "rate_limited",
                format!(
                    "device {device} exceeded {} requests per second; retry after {wait} s",
                    self.rate
                ),
                wait,
            ));
        }
        Ok(())
    }

    /// Takes one of the service's registration tokens.
    pub fn take_registration(&self, now: Instant) -> Result<(), ApiError> {
        let mut bucket = self.registration.lock().unwrap_or_else(|e| e.into_inner());
        bucket
            .take(now, self.registration_rate, self.registration_burst)
            .map_err(|wait| {
                ApiError::too_many(
                    "registration_rate_limited",
                    format!(
                        "registrations are limited to {} per second; retry after {wait} s",
                        self.registration_rate
                    ),
                    wait,
                )
            })
    }

    /// Claims one of the device's concurrent-`PATCH` slots.
    pub fn claim_patch(&self, device: &DeviceId) -> Result<PatchSlot, ApiError> {
        let mut map = self.patches.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(device.clone()).or_insert(0);
        if *n >= self.max_patches {
            return Err(ApiError::too_many(
                "too_many_concurrent_uploads",
                format!(
                    "device {device} already has {} uploads transferring; at most {} at once",
                    *n, self.max_patches
                ),
                1,
            ));
        }
        *n += 1;
        Ok(PatchSlot {
            device: device.clone(),
            patches: Arc::clone(&self.patches),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn device() -> DeviceId {
        DeviceId::from_public_key(&[1; 32])
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let limits = Limits::new((2.0, 2.0), 1, (1.0, 1.0));
        let t0 = Instant::now();
        assert!(limits.take_request(&device(), t0).is_ok());
        assert!(limits.take_request(&device(), t0).is_ok());
        let e = limits.take_request(&device(), t0).unwrap_err();
        assert_eq!(e.retry_after, Some(1));
        assert!(
            limits
                .take_request(&device(), t0 + Duration::from_millis(600))
                .is_ok()
        );
    }

    #[test]
    fn patch_slots_are_released_on_drop() {
        let limits = Limits::new((1.0, 1.0), 1, (1.0, 1.0));
        let slot = limits.claim_patch(&device()).unwrap();
        assert!(limits.claim_patch(&device()).is_err());
        drop(slot);
        assert!(limits.claim_patch(&device()).is_ok());
    }
}
