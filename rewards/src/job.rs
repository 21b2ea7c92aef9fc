//! One epoch over the tables as they were when it closed: the fraud rules,
//! the cells' weights, the contributors' claims, and the split.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use hexroad_lake::arrow::array::{Array, AsArray, RecordBatch};
use hexroad_lake::arrow::datatypes::DataType;
use hexroad_lake::columns;
use hexroad_lake::datafusion::prelude::SessionContext;

use crate::allocate::{CellInput, Claim, Split, split};
use crate::config::RewardConfig;
use crate::epoch::Epoch;

/// A fraud rule's finding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flag {
    /// `device`, `upload` or `contributor`.
    pub subject_kind: &'static str,
    pub subject: String,
    pub rule: &'static str,
    pub detail: String,
}

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

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("query for {what}: {source}")]
    Query {
        what: &'static str,
        #[source]
        source: hexroad_lake::datafusion::error::DataFusionError,
    },
    #[error("reading {what}: {detail}")]
    Answer { what: &'static str, detail: String },
    #[error("regions file {path}: {detail}")]
    Regions { path: String, detail: String },
}

type Result<T, E = Error> = std::result::Result<T, E>;

async fn query(ctx: &SessionContext, what: &'static str, sql: &str) -> Result<Vec<RecordBatch>> {
    let frame = ctx
        .sql(sql)
        .await
        .map_err(|source| Error::Query { what, source })?;
    frame
        .collect()
        .await
        .map_err(|source| Error::Query { what, source })
}

/// The answer to `what` had a column it could not be read from.
fn answer<T>(what: &'static str, read: hexroad_lake::Result<T>) -> Result<T> {
    read.map_err(|e| Error::Answer {
        what,
        detail: e.full_message(),
    })
}

fn col(
    b: &RecordBatch,
    what: &'static str,
    name: &str,
    to: &DataType,
) -> Result<std::sync::Arc<dyn Array>> {
    answer(what, columns::column(b, name, to))
}

fn strings(b: &RecordBatch, what: &'static str, name: &str) -> Result<Vec<String>> {
    answer(what, columns::strings(b, name))
}

fn u64s(b: &RecordBatch, what: &'static str, name: &str) -> Result<Vec<u64>> {
    answer(what, columns::u64s(b, name))
}

fn i64s(b: &RecordBatch, what: &'static str, name: &str) -> Result<Vec<i64>> {
    answer(what, columns::i64s(b, name))
}

fn f64s(b: &RecordBatch, what: &'static str, name: &str) -> Result<Vec<f64>> {
    answer(what, columns::f64s(b, name))
}

fn micros(b: &RecordBatch, what: &'static str, name: &str) -> Result<Vec<i64>> {
    answer(what, columns::micros(b, name))
}

fn ts_sql(t: DateTime<Utc>) -> String {
    format!(
        "arrow_cast('{}', 'Timestamp(Microsecond, Some(\"UTC\"))')",
        t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}

/// Ids and their names: millions of frames share a few thousand.
#[derive(Default)]
struct Names {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.ids.insert(name.to_owned(), id);
        id
    }

    fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }
}

/// One drive (upload) through a cell by a contributor.
struct Drive {
    /// Its first frame's time in the cell.
    first: i64,
    upload: u32,
    /// Quality-weighted frames, in thousandths.
    quality: u64,
}

/// One published frame the epoch considers.
struct Frame {
    upload: u32,
    device: u32,
    contributor: u32,
    ts: i64,
    lat: f64,
    lon: f64,
    cell: u64,
    quality: f64,
}

/// Runs the epoch over `ctx` (the tables as of the epoch's close).
pub async fn run(
    ctx: &SessionContext,
    epoch: &Epoch,
    config: &RewardConfig,
    regions: &[crate::regions::Region],
) -> Result<Outcome> {
    let (start, end) = (ts_sql(epoch.start), ts_sql(epoch.end));
    let close = ts_sql(epoch.close(chrono::Duration::from_std(config.grace).unwrap_or_default()));
    let fraud = &config.fraud;
    let r = config.resolution;
    let mut flags: Vec<Flag> = Vec::new();

    // The epoch's published frames, in a fixed order.
    let mut frames = Vec::new();
    let mut names = Names::default();
    for b in query(
        ctx,
        "the epoch's frames",
        &format!(
            "SELECT upload_id, device_id, contributor_id, ts, lat, lon, \
             h3_cell_to_parent(cell, {r}) AS cell, quality FROM frames \
             WHERE image_key IS NOT NULL AND ts >= {start} AND ts < {end}"
        ),
    )
    .await?
    {
        let w = "the epoch's frames";
        let up = col(&b, w, "upload_id", &DataType::Utf8)?;
        let dev = col(&b, w, "device_id", &DataType::Utf8)?;
        let who = col(&b, w, "contributor_id", &DataType::Utf8)?;
        let (up, dev, who) = (
            up.as_string::<i32>(),
            dev.as_string::<i32>(),
            who.as_string::<i32>(),
        );
        let (ts, lat, lon) = (
            micros(&b, w, "ts")?,
            f64s(&b, w, "lat")?,
            f64s(&b, w, "lon")?,
        );
        let (cell, quality) = (u64s(&b, w, "cell")?, f64s(&b, w, "quality")?);
        for i in 0..b.num_rows() {
            frames.push(Frame {
                upload: names.id(up.value(i)),
                device: names.id(dev.value(i)),
                contributor: names.id(who.value(i)),
                ts: ts[i],
                lat: lat[i],
                lon: lon[i],
                cell: cell[i],
                quality: quality[i],
            });
        }
    }

    // A fixed order (sorted here, not in SQL: ids are small, strings not).
    frames.sort_unstable_by(|a, b| {
        names
            .name(a.device)
            .cmp(names.name(b.device))
            .then(a.ts.cmp(&b.ts))
            .then_with(|| names.name(a.upload).cmp(names.name(b.upload)))
            .then(a.cell.cmp(&b.cell))
    });

    // teleporting_gnss: ingest refused the device's track for an
    // impossible jump during the epoch.
    for b in query(
        ctx,
        "refused tracks",
        &format!(
            "SELECT device_id, upload_id, reject_reason FROM uploads \
             WHERE status = 'rejected' AND reject_reason LIKE 'implausible_speed%' \
             AND received_at >= {start} AND received_at < {close} ORDER BY device_id, upload_id"
        ),
    )
    .await?
    {
        let w = "refused tracks";
        let (dev, up, why) = (
            strings(&b, w, "device_id")?,
            strings(&b, w, "upload_id")?,
            strings(&b, w, "reject_reason")?,
        );
        for i in 0..b.num_rows() {
            flags.push(Flag {
                subject_kind: "device",
                subject: dev[i].clone(),
                rule: "teleporting_gnss",
                detail: format!("upload {}: {}", up[i], why[i]),
            });
        }
    }

    // impossible_speed: consecutive published frames of one device.
    for pair in frames.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.device != b.device || b.ts <= a.ts {
            continue;
        }
        let metres = hexroad_lake::grid::haversine_m((a.lat, a.lon), (b.lat, b.lon));
        let speed = metres / ((b.ts - a.ts) as f64 / 1e6);
        if speed > fraud.max_speed_mps && metres > 100.0 {
            flags.push(Flag {
                subject_kind: "device",
                subject: names.name(b.device).to_owned(),
                rule: "impossible_speed",
                detail: format!(
                    "{metres:.0} m in {:.1} s ({speed:.0} m/s) between frames of uploads {} and {}",
                    (b.ts - a.ts) as f64 / 1e6,
                    names.name(a.upload),
                    names.name(b.upload)
                ),
            });
        }
    }

    // speed_mismatch: the receiver against the speedometer, second by second.
    let k = fraud.speed_mismatch_kmh;
    for b in query(
        ctx,
        "GNSS against Vehicle.Speed",
        &format!(
            "SELECT g.device_id, count(*) AS n, \
             sum(CASE WHEN abs(g.speed * 3.6 - t.value) > {k} THEN 1 ELSE 0 END) AS off \
             FROM gnss g JOIN telemetry t ON g.device_id = t.device_id \
               AND date_trunc('second', g.ts) = date_trunc('second', t.ts) \
             WHERE t.signal = 'Vehicle.Speed' AND g.speed IS NOT NULL \
               AND g.ts >= {start} AND g.ts < {end} \
             GROUP BY g.device_id ORDER BY g.device_id"
        ),
    )
    .await?
    {
        let w = "GNSS against Vehicle.Speed";
        let (dev, n, off) = (
            strings(&b, w, "device_id")?,
            i64s(&b, w, "n")?,
            i64s(&b, w, "off")?,
        );
        for i in 0..b.num_rows() {
            if n[i] >= i64::from(fraud.speed_mismatch_min_samples)
                && off[i] * 100 > n[i] * i64::from(fraud.speed_mismatch_share_pct)
            {
                flags.push(Flag {
                    subject_kind: "device",
                    subject: dev[i].clone(),
                    rule: "speed_mismatch",
                    detail: format!(
                        "{} of {} paired seconds differ by more than {k} km/h",
                        off[i], n[i]
                    ),
                });
            }
        }
    }

    // copied_drive: uploads mostly made of another contributor's frames.
    for b in query(
        ctx,
        "copied drives",
        &format!(
            "WITH copies AS ( \
               SELECT f.upload_id, f.device_id, o.upload_id AS source FROM frames f \
               JOIN frames o ON f.dedupe_of = o.frame_id \
               WHERE f.dedupe_of IS NOT NULL AND f.ts >= {start} AND f.ts < {end} \
                 AND o.contributor_id <> f.contributor_id AND o.processed_at <= f.processed_at), \
             copied AS ( \
               SELECT upload_id, device_id, count(*) AS copied, min(source) AS source \
               FROM copies GROUP BY upload_id, device_id), \
             totals AS ( \
               SELECT upload_id, count(*) AS n FROM frames \
               WHERE ts >= {start} AND ts < {end} GROUP BY upload_id) \
             SELECT c.upload_id, c.device_id, t.n, c.copied, c.source \
             FROM copied c JOIN totals t ON c.upload_id = t.upload_id ORDER BY c.upload_id"
        ),
    )
    .await?
    {
        let w = "copied drives";
        let (up, dev) = (strings(&b, w, "upload_id")?, strings(&b, w, "device_id")?);
        let (n, copied, source) = (
            i64s(&b, w, "n")?,
            i64s(&b, w, "copied")?,
            strings(&b, w, "source")?,
        );
        for i in 0..b.num_rows() {
            if copied[i] > 0 && copied[i] * 100 >= n[i] * i64::from(fraud.copied_share_pct) {
                let detail = format!(
                    "{} of {} frames are near-duplicates of another contributor's earlier frames (e.g. upload {})",
                    copied[i], n[i], source[i]
                );
                flags.push(Flag {
                    subject_kind: "upload",
                    subject: up[i].clone(),
                    rule: "copied_drive",
                    detail: detail.clone(),
                });
                flags.push(Flag {
                    subject_kind: "device",
                    subject: dev[i].clone(),
                    rule: "copied_drive",
                    detail: format!("upload {}: {detail}", up[i]),
                });
            }
        }
    }

    // two_places: one device, two uploads, the same second, far apart.
    for b in query(
        ctx,
        "one device in two places",
        &format!(
            "SELECT a.device_id, a.upload_id AS first, b.upload_id AS second, \
             max(2 * 6371008.8 * asin(sqrt(power(sin(radians(b.lat - a.lat) / 2), 2) \
                 + cos(radians(a.lat)) * cos(radians(b.lat)) \
                 * power(sin(radians(b.lon - a.lon) / 2), 2)))) AS metres \
             FROM gnss a JOIN gnss b ON a.device_id = b.device_id AND a.upload_id < b.upload_id \
               AND date_trunc('second', a.ts) = date_trunc('second', b.ts) \
             WHERE a.ts >= {start} AND a.ts < {end} \
             GROUP BY a.device_id, a.upload_id, b.upload_id ORDER BY 1, 2, 3"
        ),
    )
    .await?
    {
        let w = "one device in two places";
        let (dev, first, second, metres) = (
            strings(&b, w, "device_id")?,
            strings(&b, w, "first")?,
            strings(&b, w, "second")?,
            f64s(&b, w, "metres")?,
        );
        for i in 0..b.num_rows() {
            if metres[i] > fraud.two_places_m {
                flags.push(Flag {
                    subject_kind: "device",
                    subject: dev[i].clone(),
                    rule: "two_places",
                    detail: format!(
                        "uploads {} and {} put it {:.0} m apart in the same second",
                        first[i], second[i], metres[i]
                    ),
                });
            }
        }
    }

    // stationary_farming: many frames, few cells.
    let mut per_contributor: BTreeMap<&str, (u64, BTreeSet<u64>, BTreeSet<&str>)> = BTreeMap::new();
    for f in &frames {
        let e = per_contributor
            .entry(names.name(f.contributor))
            .or_default();
        e.0 += 1;
        e.1.insert(f.cell);
        e.2.insert(names.name(f.device));
    }
    for (who, (n, cells, devices)) in &per_contributor {
        let per_cell = *n / cells.len().max(1) as u64;
        if per_cell > u64::from(fraud.farming_frames_per_cell) {
            for d in devices {
                flags.push(Flag {
                    subject_kind: "device",
                    subject: (*d).to_owned(),
                    rule: "stationary_farming",
                    detail: format!(
                        "contributor {who}: {n} frames in {} cells ({per_cell} per cell)",
                        cells.len()
                    ),
                });
            }
        }
    }
    flags.sort();
    flags.dedup();

    let devices: BTreeMap<String, String> = frames
        .iter()
        .map(|f| (f.device, f.contributor))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|(d, c)| (names.name(d).to_owned(), names.name(c).to_owned()))
        .collect();
    let excluded_devices: BTreeSet<String> = if fraud.exclude_flagged_devices {
        flags
            .iter()
            .filter(|f| f.subject_kind == "device")
            .map(|f| f.subject.clone())
            .collect()
    } else {
        BTreeSet::new()
    };
    let excluded_uploads: BTreeSet<String> = flags
        .iter()
        .filter(|f| f.subject_kind == "upload")
        .map(|f| f.subject.clone())
        .collect();
    let eligible: Vec<&Frame> = frames
        .iter()
        .filter(|f| {
            !excluded_devices.contains(names.name(f.device))
                && !excluded_uploads.contains(names.name(f.upload))
        })
        .collect();

    // When each covered cell was last covered before the epoch.
    let covered: BTreeSet<u64> = eligible.iter().map(|f| f.cell).collect();
    let mut last_before: HashMap<u64, i64> = HashMap::new();
    for b in query(
        ctx,
        "earlier coverage",
        &format!(
            "SELECT h3_cell_to_parent(cell, {r}) AS cell, max(ts) AS last FROM frames \
             WHERE image_key IS NOT NULL AND ts < {start} GROUP BY 1"
        ),
    )
    .await?
    {
        let w = "earlier coverage";
        let (cell, last) = (u64s(&b, w, "cell")?, micros(&b, w, "last")?);
        for i in 0..b.num_rows() {
            if covered.contains(&cell[i]) {
                last_before.insert(cell[i], last[i]);
            }
        }
    }
    let mut cells = BTreeMap::new();
    let start_us = epoch.start.timestamp_micros();
    for &cell in &covered {
        let days_since = last_before
            .get(&cell)
            .map(|&t| (start_us - t) as f64 / 86_400e6);
        let cap = f64::from(config.freshness_cap_days);
        // 1000 for a cell covered just before, 2000 at the cap, and the
        // novelty bonus on top of the cap for one never covered.
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

    // Claims: quality-weighted frames per drive, each further drive of the
    // same cell by the same contributor discounted by redrive_pct.
    // (cell, contributor) → their drives through it.
    let mut drives: HashMap<(u64, u32), Vec<Drive>> = HashMap::new();
    let mut frame_counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut counts: HashMap<u32, u64> = HashMap::new();
    for f in &eligible {
        let q = (f.quality.clamp(0.0, 1.0) * 1000.0).round() as u64;
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
    for (who, n) in counts {
        frame_counts.insert(names.name(who).to_owned(), n);
    }
    let mut claims = BTreeMap::new();
    for ((cell, who), mut per_drive) in drives {
        per_drive.sort_by(|a, b| {
            a.first
                .cmp(&b.first)
                .then_with(|| names.name(a.upload).cmp(names.name(b.upload)))
        });
        let mut total = 0u64;
        let mut factor = 1_000_000u64;
        for d in per_drive {
            total += d.quality * factor / 1_000_000;
            factor = factor * u64::from(config.redrive_pct) / 100;
        }
        claims.insert((cell, names.name(who).to_owned()), total);
    }
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
