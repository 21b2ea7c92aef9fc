//! `two_places`: one device, two uploads, the same second, far apart.

use super::{Evidence, Flag};
use crate::config::FraudConfig;

pub fn check(evidence: &Evidence, fraud: &FraudConfig) -> Vec<Flag> {
    evidence
        .same_second
        .iter()
        .filter(|s| s.metres > fraud.two_places_m)
        .map(|s| {
            Flag::device(
                &s.device_id,
                "two_places",
                format!(
                    "uploads {} and {} put it {:.0} m apart in the same second",
                    s.first, s.second, s.metres
                ),
            )
        })
        .collect()
}
