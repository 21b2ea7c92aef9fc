//! The fraud rules. Each is a function from the epoch's evidence (its
//! frames in a fixed order, and what the tables say about its devices and
//! uploads) and the settings to flags that carry their evidence.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

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
        let close = epoch.close(Duration::from_std(config.grace).unwrap_or_default());
        // The joins first, the frames last: the frames are the largest thing
        // an epoch holds, and the joins' tables are gone before they come.
        let refused = snapshot
            .refused_tracks(epoch.start, close, IMPLAUSIBLE_SPEED)
            .await?;
        let speeds = snapshot
            .speed_agreement(span, config.fraud.speed_mismatch_kmh)
            .await?;
        let copies = snapshot.copied_uploads(span).await?;
        let same_second = snapshot.same_second_uploads(span).await?;
        let bound = snapshot.bound_devices().await?;
        let mut frames = snapshot.epoch_frames(span, resolution).await?;
        frames.sort_by_device_and_time();
        Ok(Self {
            frames,
            refused,
            speeds,
            copies,
            same_second,
            bound,
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
    // The rules read the same evidence and nothing else: they run at once.
    let mut flags: Vec<Flag> = {
        use rayon::iter::{IntoParallelRefIterator, ParallelIterator};
        rules
            .par_iter()
            .flat_map_iter(|rule| rule(evidence, config))
            .collect()
    };
    flags.sort();
    flags.dedup();
    flags
}

/// What one account published in the epoch.
#[derive(Default)]
struct Account {
    frames: u64,
    /// Its distinct cells.
    cells: HashSet<u64>,
    /// Its devices, as indexes into the epoch's device ids.
    devices: BTreeSet<u32>,
}

/// Frames per account, for the rules that look at a contributor: the
/// devices a contributor's key bound are one account under its name; a
/// device that only named the contributor (open registration, no binding)
/// is an account of its own, whatever name it gave. Counted as the frames
/// go by, so no list of millions of frames is built.
fn by_contributor(evidence: &Evidence) -> BTreeMap<String, Account> {
    let names = &evidence.frames;
    // Each (contributor, device) pair's account is found once, not per frame.
    let mut account_of: HashMap<(u32, u32), usize> = HashMap::new();
    let mut accounts: Vec<(String, Account)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for f in &names.frames {
        let at = *account_of
            .entry((f.contributor, f.device))
            .or_insert_with(|| {
                let contributor = &names.contributors[f.contributor as usize];
                let device = &names.devices[f.device as usize];
                let bound = evidence
                    .bound
                    .get(contributor)
                    .is_some_and(|devices| devices.contains(device));
                let account = if bound {
                    contributor.to_string()
                } else {
                    format!("{contributor} (unbound device {device})")
                };
                *index.entry(account.clone()).or_insert_with(|| {
                    accounts.push((account, Account::default()));
                    accounts.len() - 1
                })
            });
        let account = &mut accounts[at].1;
        account.frames += 1;
        account.cells.insert(f.cell);
        account.devices.insert(f.device);
    }
    accounts.into_iter().collect()
}
