//! `teleporting_gnss`: ingest refused the device's track for an impossible
//! jump during the epoch.

use super::{Evidence, Flag};
use crate::config::FraudConfig;

pub fn check(evidence: &Evidence, _: &FraudConfig) -> Vec<Flag> {
    evidence
        .refused
        .iter()
        .map(|r| {
            Flag::device(
                &r.device_id,
                "teleporting_gnss",
                format!("upload {}: {}", r.upload_id, r.reason),
            )
        })
        .collect()
}
