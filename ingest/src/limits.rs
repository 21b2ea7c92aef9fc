//! Per-device request rate (a token bucket) and concurrency limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hexroad_wire::{ContributorId, DeviceId};

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

/// A token bucket per key (device, address, contributor), with full ones
/// forgotten past [`KEPT_BUCKETS`] so the map stays bounded.
pub struct KeyedBuckets<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: std::hash::Hash + Eq + Clone> KeyedBuckets<K> {
    pub fn new((rate, burst): (f64, f64)) -> Self {
        Self {
            rate,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`, or says how many seconds until one is there.
    pub fn take(&self, key: &K, now: Instant) -> Result<(), u64> {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= KEPT_BUCKETS {
            let (rate, burst) = (self.rate, self.burst);
            map.retain(|_, b| {
                b.refill(now, rate, burst);
                b.tokens < burst
            });
        }
        map.entry(key.clone())
            .or_insert_with(|| Bucket::full(self.burst, now))
            .take(now, self.rate, self.burst)
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }
}

/// The registration limits: for the whole service, per source address and
/// per contributor, as (per second, burst).
#[derive(Debug, Clone, Copy)]
pub struct RegistrationRates {
    pub service: (f64, f64),
    pub address: (f64, f64),
    pub contributor: (f64, f64),
}

/// Rate and concurrency limits for every device.
pub struct Limits {
    requests: KeyedBuckets<DeviceId>,
    max_patches: usize,
    /// One bucket for all registrations: keys are free to make, so the
    /// rate of new devices is limited for the whole service.
    registration: Mutex<Bucket>,
    registration_rate: f64,
    registration_burst: f64,
    /// Per source address: one host cannot take the whole service's rate.
    registration_by_address: KeyedBuckets<std::net::IpAddr>,
    /// Per contributor: one account cannot mint devices without end.
    registration_by_contributor: KeyedBuckets<ContributorId>,
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
    pub fn new(requests: (f64, f64), max_patches: usize, registrations: RegistrationRates) -> Self {
        let (registration_rate, registration_burst) = registrations.service;
        Self {
            requests: KeyedBuckets::new(requests),
            max_patches,
            registration: Mutex::new(Bucket::full(registration_burst, Instant::now())),
            registration_rate,
            registration_burst,
            registration_by_address: KeyedBuckets::new(registrations.address),
            registration_by_contributor: KeyedBuckets::new(registrations.contributor),
            patches: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes one request token, or says how long to wait for one.
    pub fn take_request(&self, device: &DeviceId, now: Instant) -> Result<(), ApiError> {
        self.requests.take(device, now).map_err(|wait| {
            ApiError::too_many(
                "rate_limited",
                format!(
                    "device {device} exceeded {} requests per second; retry after {wait} s",
                    self.requests.rate()
                ),
                wait,
            )
        })
    }

    /// Takes a registration token from the source address's bucket, then
    /// the contributor's, then the service's.
    pub fn take_registration_from(
        &self,
        address: Option<std::net::IpAddr>,
        contributor: &ContributorId,
        now: Instant,
    ) -> Result<(), ApiError> {
        let refused = |whose: String, rate: f64, wait: u64| {
            ApiError::too_many(
                "registration_rate_limited",
                format!(
                    "registrations {whose} are limited to {rate} per second; retry after {wait} s"
                ),
                wait,
            )
        };
        if let Some(address) = address {
            self.registration_by_address
                .take(&address, now)
                .map_err(|w| {
                    refused(
                        format!("from {address}"),
                        self.registration_by_address.rate(),
                        w,
                    )
                })?;
        }
        self.registration_by_contributor
            .take(contributor, now)
            .map_err(|w| {
                refused(
                    format!("for contributor {contributor}"),
                    self.registration_by_contributor.rate(),
                    w,
                )
            })?;
        self.take_registration(now)
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

    fn rates() -> RegistrationRates {
        RegistrationRates {
            service: (1.0, 1.0),
            address: (1.0, 1.0),
            contributor: (1.0, 1.0),
        }
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let limits = Limits::new((2.0, 2.0), 1, rates());
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
        let limits = Limits::new((1.0, 1.0), 1, rates());
        let slot = limits.claim_patch(&device()).unwrap();
        assert!(limits.claim_patch(&device()).is_err());
        drop(slot);
        assert!(limits.claim_patch(&device()).is_ok());
    }
}
