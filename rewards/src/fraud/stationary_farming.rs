//! `stationary_farming`: many frames in few cells. Every device of the
//! contributor is flagged.

use std::collections::BTreeSet;

use super::{Evidence, Flag, by_contributor};
use crate::config::FraudConfig;

pub fn check(evidence: &Evidence, fraud: &FraudConfig) -> Vec<Flag> {
    let mut flags = Vec::new();
    for (who, account) in by_contributor(evidence) {
        let n = account.frames;
        let cells = account.cells.len();
        let per_cell = n / cells.max(1) as u64;
        if per_cell <= u64::from(fraud.farming_frames_per_cell) {
            continue;
        }
        let devices: BTreeSet<String> = account
            .devices
            .iter()
            .map(|&d| evidence.frames.devices[d as usize].to_string())
            .collect();
        for d in devices {
            flags.push(Flag::device(
                d,
                "stationary_farming",
                format!("contributor {who}: {n} frames in {cells} cells ({per_cell} per cell)"),
            ));
        }
    }
    flags
}
