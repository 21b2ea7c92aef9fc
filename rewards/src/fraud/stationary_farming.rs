//! `stationary_farming`: many frames in few cells. Every device of the
//! contributor is flagged.

use std::collections::BTreeSet;

use super::{Evidence, Flag, by_contributor};
use crate::config::FraudConfig;

pub fn check(evidence: &Evidence, fraud: &FraudConfig) -> Vec<Flag> {
    let mut flags = Vec::new();
    for (who, frames) in by_contributor(evidence) {
        let n = frames.len() as u64;
        let cells: BTreeSet<u64> = frames.iter().map(|f| f.cell).collect();
        let per_cell = n / cells.len().max(1) as u64;
        if per_cell <= u64::from(fraud.farming_frames_per_cell) {
            continue;
        }
        let devices: BTreeSet<String> = frames.iter().map(|f| evidence.device(f)).collect();
        for d in devices {
            flags.push(Flag::device(
                d,
                "stationary_farming",
                format!(
                    "contributor {who}: {n} frames in {} cells ({per_cell} per cell)",
                    cells.len()
                ),
            ));
        }
    }
    flags
}
