//! `copied_drive`: uploads mostly made of another contributor's earlier
//! frames. The upload is flagged, and the device that sent it.

use super::{Evidence, Flag};
use crate::config::FraudConfig;

pub fn check(evidence: &Evidence, fraud: &FraudConfig) -> Vec<Flag> {
    let mut flags = Vec::new();
    for c in &evidence.copies {
        if c.copied > 0 && c.copied * 100 >= c.frames * u64::from(fraud.copied_share_pct) {
            let detail = format!(
                "{} of {} frames are near-duplicates of another contributor's earlier frames (e.g. upload {})",
                c.copied, c.frames, c.source
            );
            flags.push(Flag {
                subject_kind: "upload",
                subject: c.upload_id.to_string(),
                rule: "copied_drive",
                detail: detail.clone(),
            });
            flags.push(Flag::device(
                &c.device_id,
                "copied_drive",
                format!("upload {}: {detail}", c.upload_id),
            ));
        }
    }
    flags
}
