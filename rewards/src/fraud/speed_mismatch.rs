//! `speed_mismatch`: the receiver against the speedometer, second by second.

use super::{Evidence, Flag};
use crate::config::FraudConfig;

pub fn check(evidence: &Evidence, fraud: &FraudConfig) -> Vec<Flag> {
    evidence
        .speeds
        .iter()
        .filter(|s| {
            s.paired >= u64::from(fraud.speed_mismatch_min_samples)
                && s.off * 100 > s.paired * u64::from(fraud.speed_mismatch_share_pct)
        })
        .map(|s| {
            Flag::device(
                &s.device_id,
                "speed_mismatch",
                format!(
                    "{} of {} paired seconds differ by more than {} km/h",
                    s.off, s.paired, fraud.speed_mismatch_kmh
                ),
            )
        })
        .collect()
}
