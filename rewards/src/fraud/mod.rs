//! The fraud rules. Each is a function from the epoch's evidence (its
//! frames in a fixed order, and what the tables say about its devices and
//! uploads) and the settings to flags that carry their evidence.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::Duration;
use h3o::Resolution;
use hexroad_lake::Snapshot;
use hexroad_lake::reads::epoch::{
    CopiedUpload, EpochFrame, EpochFrames, RefusedTrack, SameSecond, Span, SpeedAgreement,
};
use hexroad_wire::{ContributorId, DeviceId};

use crate::config::{FraudConfig, RewardConfig};
use crate::epoch::Epoch;

mod copied_drive;
mod impossible_speed;
mod speed_mismatch;
mod stationary_farming;
mod teleporting_gnss;
mod two_places;

/// A fraud rule's finding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flag {
    /// `device`, `upload` or `contributor`.
    pub subject_kind: &'static str,
    pub subject: String,
    pub rule: &'static str,
    pub detail: String,
}

impl Flag {
    fn device(subject: impl ToString, rule: &'static str, detail: String) -> Self {
        Self {
            subject_kind: "device",
            subject: subject.to_string(),
            rule,
            detail,
        }
    }
}

/// What the rules weigh, read once from the epoch's snapshot.
pub struct Evidence {
    /// Published frames, sorted by device, time, upload and cell.
    pub frames: EpochFrames,
    /// GNSS uploads ingest refused for an impossible jump.
    pub refused: Vec<RefusedTrack>,
    pub speeds: Vec<SpeedAgreement>,
    pub copies: Vec<CopiedUpload>,
    pub same_second: Vec<SameSecond>,
    /// The devices each contributor's key has bound: a rule about "a
    /// contributor's devices" acts on these only, so a stranger who names
    /// someone else's contributor id gets only their own device flagged.
    pub bound: HashMap<ContributorId, BTreeSet<DeviceId>>,
}

/// Ingest's reason for a track that jumps faster than a car can go.
const IMPLAUSIBLE_SPEED: &str = "implausible_speed";

impl Evidence {
    /// Reads the evidence of `epoch` from `snapshot`.
    pub async fn gather(
        snapshot: &Snapshot,
        epoch: &Epoch,
        config: &RewardConfig,
    ) -> hexroad_lake::Result<Self> {
        let span = Span {
            start: epoch.start,
            end: epoch.end,
        };
        let resolution = Resolution::try_from(config.resolution).unwrap_or(Resolution::Ten);
        let mut frames = snapshot.epoch_frames(span, resolution).await?;
        // A fixed order (sorted here, not in SQL: ids are small, strings not).
        {
            let EpochFrames {
                uploads,
                devices,
                frames,
                ..
            } = &mut frames;
            frames.sort_unstable_by(|a, b| {
                devices[a.device as usize]
                    .cmp(&devices[b.device as usize])
                    .then(a.ts.cmp(&b.ts))
                    .then_with(|| uploads[a.upload as usize].cmp(&uploads[b.upload as usize]))
                    .then(a.cell.cmp(&b.cell))
            });
        }
        let close = epoch.close(Duration::from_std(config.grace).unwrap_or_default());
        Ok(Self {
            frames,
            refused: snapshot
                .refused_tracks(epoch.start, close, IMPLAUSIBLE_SPEED)
                .await?,
            speeds: snapshot
                .speed_agreement(span, config.fraud.speed_mismatch_kmh)
                .await?,
            copies: snapshot.copied_uploads(span).await?,
            same_second: snapshot.same_second_uploads(span).await?,
            bound: snapshot.bound_devices().await?,
        })
    }

    fn device(&self, f: &EpochFrame) -> String {
        self.frames.devices[f.device as usize].to_string()
    }

    fn upload(&self, f: &EpochFrame) -> String {
        self.frames.uploads[f.upload as usize].to_string()
    }
}

/// Every rule's flags, sorted, each once.
pub fn check(evidence: &Evidence, config: &FraudConfig) -> Vec<Flag> {
    let rules: [fn(&Evidence, &FraudConfig) -> Vec<Flag>; 6] = [
        teleporting_gnss::check,
        impossible_speed::check,
        speed_mismatch::check,
        copied_drive::check,
        two_places::check,
        stationary_farming::check,
    ];
    let mut flags: Vec<Flag> = rules
        .iter()
        .flat_map(|rule| rule(evidence, config))
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

/// Frames per account, for the rules that look at a contributor: the
/// devices a contributor's key bound are one account under its name; a
/// device that only named the contributor (open registration, no binding)
/// is an account of its own, whatever name it gave.
fn by_contributor(evidence: &Evidence) -> BTreeMap<String, Vec<&EpochFrame>> {
    let mut out: BTreeMap<String, Vec<&EpochFrame>> = BTreeMap::new();
    for f in &evidence.frames.frames {
        let contributor = &evidence.frames.contributors[f.contributor as usize];
        let device = &evidence.frames.devices[f.device as usize];
        let bound = evidence
            .bound
            .get(contributor)
            .is_some_and(|devices| devices.contains(device));
        let account = if bound {
            contributor.to_string()
        } else {
            format!("{contributor} (unbound device {device})")
        };
        out.entry(account).or_default().push(f);
    }
    out
}
