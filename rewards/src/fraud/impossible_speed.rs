//! `impossible_speed`: consecutive published frames of one device further
//! apart than a car could have gone.

use super::{Evidence, Flag};
use crate::config::FraudConfig;

pub fn check(evidence: &Evidence, fraud: &FraudConfig) -> Vec<Flag> {
    let mut flags = Vec::new();
    for pair in evidence.frames.frames.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.device != b.device || b.ts <= a.ts {
            continue;
        }
        let metres = hexroad_wire::grid::haversine_m((a.lat, a.lon), (b.lat, b.lon));
        let seconds = (b.ts - a.ts) as f64 / 1e6;
        let speed = metres / seconds;
        if speed > fraud.max_speed_mps && metres > 100.0 {
            flags.push(Flag::device(
                evidence.device(b),
                "impossible_speed",
                format!(
                    "{metres:.0} m in {seconds:.1} s ({speed:.0} m/s) between frames of uploads {} and {}",
                    evidence.upload(a),
                    evidence.upload(b)
                ),
            ));
        }
    }
    flags
}
