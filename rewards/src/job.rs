//! One epoch over the tables as they were when it closed: the fraud rules
//! (`fraud`), the cells' weights, the contributors' claims, and the split.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use h3o::Resolution;
use hexroad_lake::Snapshot;
use hexroad_lake::reads::epoch::{EpochFrame, EpochFrames};

use crate::allocate::{CellInput, Claim, Split, split};
use crate::config::RewardConfig;
use crate::epoch::Epoch;
pub use crate::fraud::Flag;
use crate::fraud::{self, Evidence};

/// A covered cell's weight and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct CellWeight {
    pub cell: u64,
    pub weight: u64,
    /// Days since last covered before the epoch; `None` if never.
    pub days_since: Option<f64>,
    pub region_milli: u64,
}

/// Everything an epoch decided, for the ledger, the tables and `explain`.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub epoch: Epoch,
    pub flags: Vec<Flag>,
    pub excluded_devices: BTreeSet<String>,
    pub excluded_uploads: BTreeSet<String>,
    pub cells: BTreeMap<u64, CellWeight>,
    /// (cell, contributor) → claim weight after re-drive discounts.
    pub claims: BTreeMap<(u64, String), u64>,
    /// Eligible frames per contributor.
    pub frames: BTreeMap<String, u64>,
    /// Each device with frames in the epoch, and its contributor.
    pub devices: BTreeMap<String, String>,
    pub split: Split,
}

/// Why an epoch could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tables could not be read as of the epoch's close.
    #[error("reading the epoch's tables")]
    Read(#[from] hexroad_lake::Error),
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// One drive (upload) through a cell by a contributor.
struct Drive {
    /// Its first frame's time in the cell.
    first: i64,
    upload: u32,
    /// Quality-weighted frames, in thousandths.
    quality: u64,
}

/// Runs the epoch over `snapshot` (the tables as of the epoch's close).
pub async fn run(
    snapshot: &Snapshot,
    epoch: &Epoch,
    config: &RewardConfig,
    regions: &[crate::regions::Region],
) -> Result<Outcome> {
    let evidence = Evidence::gather(snapshot, epoch, config).await?;
    let flags = fraud::check(&evidence, &config.fraud);
    let mut names = evidence.frames;
    let frames = &names.frames;

    let devices: BTreeMap<String, String> = frames
        .iter()
        .map(|f| (f.device, f.contributor))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|(d, c)| {
            (
                names.devices[d as usize].to_string(),
                names.contributors[c as usize].to_string(),
            )
        })
        .collect();
    let (excluded_devices, excluded_uploads) = exclusions(&flags, config);
    // The same exclusions as indexes, so millions of frames compare numbers.
    let excluded = |ids: &BTreeSet<String>, names: &[String]| -> Vec<bool> {
        names.iter().map(|n| ids.contains(n)).collect()
    };
    let device_out = excluded(&excluded_devices, &to_strings(&names.devices));
    let upload_out = excluded(&excluded_uploads, &to_strings(&names.uploads));
    // Kept in place: a filtered copy of millions of frames is memory too.
    names
        .frames
        .retain(|f| !device_out[f.device as usize] && !upload_out[f.upload as usize]);
    let eligible = &names.frames;

    let covered: BTreeSet<u64> = eligible
        .iter()
        .map(|f| f.cell)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let cells = cell_weights(snapshot, epoch, config, regions, &covered).await?;
    let (claims, frame_counts) = claims(eligible, &names, config);
    let mut inputs: BTreeMap<u64, CellInput> = BTreeMap::new();
    for ((cell, who), weight) in &claims {
        inputs
            .entry(*cell)
            .or_insert_with(|| CellInput {
                cell: *cell,
                weight: cells[cell].weight,
                claims: Vec::new(),
            })
            .claims
            .push(Claim {
                contributor: who.clone(),
                weight: *weight,
            });
    }
    let cap = config.budget / 100 * u64::from(config.contributor_cap_pct);
    let split = split(
        config.budget,
        &inputs.into_values().collect::<Vec<_>>(),
        cap,
    );
    Ok(Outcome {
        epoch: epoch.clone(),
        flags,
        excluded_devices,
        excluded_uploads,
        cells,
        claims,
        frames: frame_counts,
        devices,
        split,
    })
}

/// The devices (when the settings say so) and uploads the flags exclude.
fn exclusions(flags: &[Flag], config: &RewardConfig) -> (BTreeSet<String>, BTreeSet<String>) {
    let subjects = |kind: &str| -> BTreeSet<String> {
        flags
            .iter()
            .filter(|f| f.subject_kind == kind)
            .map(|f| f.subject.clone())
            .collect()
    };
    let devices = if config.fraud.exclude_flagged_devices {
        subjects("device")
    } else {
        BTreeSet::new()
    };
    (devices, subjects("upload"))
}

/// Each covered cell's weight: 1000 for a cell covered just before the
/// epoch, rising to 2000 at the freshness cap, the novelty bonus on top for
/// one never covered, times its region's multiplier.
async fn cell_weights(
    snapshot: &Snapshot,
    epoch: &Epoch,
    config: &RewardConfig,
    regions: &[crate::regions::Region],
    covered: &BTreeSet<u64>,
) -> Result<BTreeMap<u64, CellWeight>> {
    let mut last_before: HashMap<u64, i64> = HashMap::new();
    let resolution = Resolution::try_from(config.resolution).unwrap_or(Resolution::Ten);
    for (cell, last) in snapshot
        .last_covered_before(epoch.start, resolution)
        .await?
    {
        if covered.contains(&cell) {
            last_before.insert(cell, last);
        }
    }
    let mut cells = BTreeMap::new();
    let start_us = epoch.start.timestamp_micros();
    let cap = f64::from(config.freshness_cap_days);
    for &cell in covered {
        let days_since = last_before
            .get(&cell)
            .map(|&t| (start_us - t) as f64 / 86_400e6);
        let base = match days_since {
            Some(d) => 1000 + (1000.0 * d.clamp(0.0, cap) / cap).round() as u64,
            None => 2000 * (100 + u64::from(config.novelty_bonus_pct)) / 100,
        };
        let region_milli = crate::regions::multiplier_milli(regions, cell);
        cells.insert(
            cell,
            CellWeight {
                cell,
                weight: base * region_milli / 1000,
                days_since,
                region_milli,
            },
        );
    }
    Ok(cells)
}

/// (cell, contributor) → claim, and eligible frames per contributor. A
/// claim is the quality-weighted frames of each drive through the cell, each
/// further drive of the same cell by the same contributor discounted by
/// `redrive_pct`.
fn claims(
    eligible: &[EpochFrame],
    names: &EpochFrames,
    config: &RewardConfig,
) -> (BTreeMap<(u64, String), u64>, BTreeMap<String, u64>) {
    let mut drives: HashMap<(u64, u32), Vec<Drive>> = HashMap::new();
    let mut counts: HashMap<u32, u64> = HashMap::new();
    for f in eligible {
        let q = u64::from(f.quality_milli);
        let per_drive = drives.entry((f.cell, f.contributor)).or_default();
        match per_drive.iter_mut().find(|d| d.upload == f.upload) {
            Some(d) => {
                d.first = d.first.min(f.ts);
                d.quality += q;
            }
            None => per_drive.push(Drive {
                first: f.ts,
                upload: f.upload,
                quality: q,
            }),
        }
        *counts.entry(f.contributor).or_default() += 1;
    }
    let frame_counts = counts
        .into_iter()
        .map(|(who, n)| (names.contributors[who as usize].to_string(), n))
        .collect();
    let mut claims = BTreeMap::new();
    for ((cell, who), mut per_drive) in drives {
        per_drive.sort_by(|a, b| {
            a.first.cmp(&b.first).then_with(|| {
                names.uploads[a.upload as usize].cmp(&names.uploads[b.upload as usize])
            })
        });
        let mut total = 0u64;
        let mut factor = 1_000_000u64;
        for d in per_drive {
            total += d.quality * factor / 1_000_000;
            factor = factor * u64::from(config.redrive_pct) / 100;
        }
        claims.insert((cell, names.contributors[who as usize].to_string()), total);
    }
    (claims, frame_counts)
}

fn to_strings<T: ToString>(ids: &[T]) -> Vec<String> {
    ids.iter().map(ToString::to_string).collect()
}
