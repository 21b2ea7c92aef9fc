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

/// Rate and concurrency limits for every device.
pub struct Limits {
    rate: f64,
    burst: f64,
    max_patches: usize,
    buckets: Mutex<HashMap<DeviceId, Bucket>>,
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
    pub fn new(rate: f64, burst: f64, max_patches: usize) -> Self {
        Self {
            rate,
            burst,
            max_patches,
            buckets: Mutex::new(HashMap::new()),
            patches: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes one request token, or says how long to wait for one.
    pub fn take_request(&self, device: &DeviceId, now: Instant) -> Result<(), ApiError> {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = map.entry(device.clone()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - bucket.tokens) / self.rate).ceil() as u64;
            Err(ApiError::too_many(
                "rate_limited",
                format!(
                    "device {device} exceeded {} requests per second; retry after {wait} s",
                    self.rate
                ),
                wait,
            ))
        }
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
        let limits = Limits::new(2.0, 2.0, 1);
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
        let limits = Limits::new(1.0, 1.0, 1);
        let slot = limits.claim_patch(&device()).unwrap();
        assert!(limits.claim_patch(&device()).is_err());
        drop(slot);
        assert!(limits.claim_patch(&device()).is_ok());
    }
}
