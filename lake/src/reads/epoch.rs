//! What a reward epoch reads, from a snapshot of the tables as they were
//! when it closed: its published frames, and the evidence the fraud rules
//! weigh (refused tracks, speedometer pairs, copied frames, one device in
//! two places) and the coverage before it.
//!
//! An epoch reads millions of frames that share a few thousand ids, so
//! [`EpochFrames`] holds each id once and frames refer to them by index.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use h3o::Resolution;

use super::{Snapshot, stored, timestamp};
use futures::TryStreamExt;

use crate::columns::{f64s, i64s, micros, strings, u64s, utf8};
use crate::{ContributorId, DeviceId, Result, UploadId};

/// An epoch's time range: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// One published frame of the epoch; ids are indexes into [`EpochFrames`].
/// Kept small (48 bytes): an epoch holds millions of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochFrame {
    pub upload: u32,
    pub device: u32,
    pub contributor: u32,
    /// The frame's quality in thousandths (0–1000), as claims weigh it.
    pub quality_milli: u16,
    /// Microseconds since the Unix epoch.
    pub ts: i64,
    pub lat: f64,
    pub lon: f64,
    /// The frame's cell at the epoch's resolution.
    pub cell: u64,
}

/// The epoch's published frames, each id held once.
#[derive(Debug, Default, Clone)]
pub struct EpochFrames {
    pub uploads: Vec<UploadId>,
    pub devices: Vec<DeviceId>,
    pub contributors: Vec<ContributorId>,
    pub frames: Vec<EpochFrame>,
}

impl EpochFrames {
    /// Sorts the frames by device, time, upload and cell (ids compared as
    /// text, so the order does not depend on the order rows were read in),
    /// on every core.
    pub fn sort_by_device_and_time(&mut self) {
        use rayon::slice::ParallelSliceMut;
        let device_rank = ranks(&self.devices);
        let upload_rank = ranks(&self.uploads);
        self.frames.par_sort_unstable_by_key(|f| {
            (
                device_rank[f.device as usize],
                f.ts,
                upload_rank[f.upload as usize],
                f.cell,
            )
        });
    }
}

/// Each value's place among `values` sorted: comparing ranks compares the
/// values, at the cost of an integer comparison.
fn ranks<T: Ord>(values: &[T]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..values.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| values[a as usize].cmp(&values[b as usize]));
    let mut rank = vec![0; values.len()];
    for (place, &i) in order.iter().enumerate() {
        rank[i as usize] = place as u32;
    }
    rank
}

/// Ids of one kind, each stored once and referred to by index.
struct Interner<T> {
    index: HashMap<String, u32>,
    values: Vec<T>,
    /// The last text looked up and its id: rows of one upload arrive
    /// together, so most lookups repeat the one before.
    last: Option<(String, u32)>,
}

impl<T: std::str::FromStr> Interner<T> {
    fn new() -> Self {
        Self {
            index: HashMap::new(),
            values: Vec::new(),
            last: None,
        }
    }

    fn id(&mut self, text: &str, what: &str) -> Result<u32> {
        if let Some((last, id)) = &self.last
            && last == text
        {
            return Ok(*id);
        }
        let id = match self.index.get(text) {
            Some(&id) => id,
            None => {
                let id = u32::try_from(self.values.len()).map_err(|_| {
                    crate::Error::Internal(format!("over {} distinct {what}s", u32::MAX))
                })?;
                self.values.push(stored(text, what)?);
                self.index.insert(text.to_owned(), id);
                id
            }
        };
        self.last = Some((text.to_owned(), id));
        Ok(id)
    }
}

/// A GNSS upload ingest refused during the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedTrack {
    pub device_id: DeviceId,
    pub upload_id: UploadId,
    pub reason: String,
}

/// How often a device's receiver and speedometer disagreed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeedAgreement {
    pub device_id: DeviceId,
    /// Seconds with both a GNSS speed and a `Vehicle.Speed` sample.
    pub paired: u64,
    /// Of those, seconds where they differ by more than the tolerance.
    pub off: u64,
}

/// An upload of the epoch with near-duplicates of another contributor's
/// earlier frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedUpload {
    pub upload_id: UploadId,
    pub device_id: DeviceId,
    /// Its frames in the epoch.
    pub frames: u64,
    /// Of those, copies of another contributor's earlier frames.
    pub copied: u64,
    /// One upload copied from (the smallest id).
    pub source: UploadId,
}

/// Two uploads of one device with fixes in the same second.
#[derive(Debug, Clone, PartialEq)]
pub struct SameSecond {
    pub device_id: DeviceId,
    pub first: UploadId,
    pub second: UploadId,
    /// The widest distance between them in one of those seconds.
    pub metres: f64,
}

impl Snapshot {
    /// The published frames taken in `span`, cells at `resolution`, read
    /// batch by batch: memory holds the compact frames and one batch, never
    /// the whole answer.
    pub async fn epoch_frames(&self, span: Span, resolution: Resolution) -> Result<EpochFrames> {
        // Counted first, so the frames are allocated once at their size: a
        // vector grown by doubling holds its old and new buffers at once.
        let counted = self
            .read(
                "SELECT count(*) AS n FROM frames \
                 WHERE image_key IS NOT NULL AND ts >= $1 AND ts < $2",
                vec![timestamp(span.start), timestamp(span.end)],
            )
            .await?;
        let count = counted
            .first()
            .map(|b| i64s(b, "n"))
            .transpose()?
            .and_then(|n| n.first().copied())
            .unwrap_or(0);
        let mut batches = self
            .stream(
                "SELECT upload_id, device_id, contributor_id, ts, lat, lon, \
                 h3_cell_to_parent(cell, $1) AS cell, quality FROM frames \
                 WHERE image_key IS NOT NULL AND ts >= $2 AND ts < $3",
                vec![
                    i64::from(u8::from(resolution)).into(),
                    timestamp(span.start),
                    timestamp(span.end),
                ],
            )
            .await?;
        let (mut uploads, mut devices, mut contributors) =
            (Interner::new(), Interner::new(), Interner::new());
        let mut frames = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        while let Some(b) = batches.try_next().await? {
            let (up, dev, who) = (
                utf8(&b, "upload_id")?,
                utf8(&b, "device_id")?,
                utf8(&b, "contributor_id")?,
            );
            let (ts, lat, lon) = (micros(&b, "ts")?, f64s(&b, "lat")?, f64s(&b, "lon")?);
            let (cell, quality) = (u64s(&b, "cell")?, f64s(&b, "quality")?);
            for i in 0..b.num_rows() {
                frames.push(EpochFrame {
                    upload: uploads.id(up.value(i), "upload id")?,
                    device: devices.id(dev.value(i), "device id")?,
                    contributor: contributors.id(who.value(i), "contributor id")?,
                    quality_milli: (quality[i].clamp(0.0, 1.0) * 1000.0).round() as u16,
                    ts: ts[i],
                    lat: lat[i],
                    lon: lon[i],
                    cell: cell[i],
                });
            }
        }
        Ok(EpochFrames {
            uploads: uploads.values,
            devices: devices.values,
            contributors: contributors.values,
            frames,
        })
    }

    /// GNSS uploads received in `[start, close)` that ingest refused with a
    /// reason starting `reason_prefix`, by device then upload.
    pub async fn refused_tracks(
        &self,
        start: DateTime<Utc>,
        close: DateTime<Utc>,
        reason_prefix: &str,
    ) -> Result<Vec<RefusedTrack>> {
        let batches = self
            .read(
                "SELECT device_id, upload_id, reject_reason FROM uploads \
                 WHERE status = 'rejected' AND starts_with(reject_reason, $1) \
                 AND received_at >= $2 AND received_at < $3 ORDER BY device_id, upload_id",
                vec![reason_prefix.into(), timestamp(start), timestamp(close)],
            )
            .await?;
        let mut out = Vec::new();
        for b in &batches {
            let (dev, up, why) = (
                strings(b, "device_id")?,
                strings(b, "upload_id")?,
                strings(b, "reject_reason")?,
            );
            for i in 0..b.num_rows() {
                out.push(RefusedTrack {
                    device_id: stored(&dev[i], "device id")?,
                    upload_id: stored(&up[i], "upload id")?,
                    reason: why[i].clone(),
                });
            }
        }
        Ok(out)
    }

    /// Per device, the seconds of `span` with both a GNSS speed and a
    /// `Vehicle.Speed` sample, and how many differ by over `tolerance_kmh`.
    pub async fn speed_agreement(
        &self,
        span: Span,
        tolerance_kmh: f64,
    ) -> Result<Vec<SpeedAgreement>> {
        let batches = self
            .read(
                "SELECT g.device_id, count(*) AS n, \
                 sum(CASE WHEN abs(g.speed * 3.6 - t.value) > $1 THEN 1 ELSE 0 END) AS off \
                 FROM gnss g JOIN telemetry t ON g.device_id = t.device_id \
                   AND date_trunc('second', g.ts) = date_trunc('second', t.ts) \
                 WHERE t.signal = 'Vehicle.Speed' AND g.speed IS NOT NULL \
                   AND g.ts >= $2 AND g.ts < $3 \
                 GROUP BY g.device_id ORDER BY g.device_id",
                vec![
                    tolerance_kmh.into(),
                    timestamp(span.start),
                    timestamp(span.end),
                ],
            )
            .await?;
        let mut out = Vec::new();
        for b in &batches {
            let (dev, n, off) = (strings(b, "device_id")?, i64s(b, "n")?, i64s(b, "off")?);
            for i in 0..b.num_rows() {
                out.push(SpeedAgreement {
                    device_id: stored(&dev[i], "device id")?,
                    paired: n[i].unsigned_abs(),
                    off: off[i].unsigned_abs(),
                });
            }
        }
        Ok(out)
    }

    /// Uploads of `span` holding near-duplicates of another contributor's
    /// frames processed earlier, by upload.
    pub async fn copied_uploads(&self, span: Span) -> Result<Vec<CopiedUpload>> {
        let batches = self
            .read(
                "WITH copies AS ( \
                   SELECT f.upload_id, f.device_id, o.upload_id AS source FROM frames f \
                   JOIN frames o ON f.dedupe_of = o.frame_id \
                   WHERE f.dedupe_of IS NOT NULL AND f.ts >= $1 AND f.ts < $2 \
                     AND o.contributor_id <> f.contributor_id \
                     AND o.processed_at <= f.processed_at), \
                 copied AS ( \
                   SELECT upload_id, device_id, count(*) AS copied, min(source) AS source \
                   FROM copies GROUP BY upload_id, device_id), \
                 totals AS ( \
                   SELECT upload_id, count(*) AS n FROM frames \
                   WHERE ts >= $1 AND ts < $2 GROUP BY upload_id) \
                 SELECT c.upload_id, c.device_id, t.n, c.copied, c.source \
                 FROM copied c JOIN totals t ON c.upload_id = t.upload_id ORDER BY c.upload_id",
                vec![timestamp(span.start), timestamp(span.end)],
            )
            .await?;
        let mut out = Vec::new();
        for b in &batches {
            let (up, dev) = (strings(b, "upload_id")?, strings(b, "device_id")?);
            let (n, copied, source) = (i64s(b, "n")?, i64s(b, "copied")?, strings(b, "source")?);
            for i in 0..b.num_rows() {
                out.push(CopiedUpload {
                    upload_id: stored(&up[i], "upload id")?,
                    device_id: stored(&dev[i], "device id")?,
                    frames: n[i].unsigned_abs(),
                    copied: copied[i].unsigned_abs(),
                    source: stored(&source[i], "upload id")?,
                });
            }
        }
        Ok(out)
    }

    /// Pairs of one device's uploads with fixes in the same second of
    /// `span`, and how far apart they put it, by device then uploads.
    pub async fn same_second_uploads(&self, span: Span) -> Result<Vec<SameSecond>> {
        let batches = self
            .read(
                "SELECT a.device_id, a.upload_id AS first, b.upload_id AS second, \
                 max(2 * 6371008.8 * asin(sqrt(power(sin(radians(b.lat - a.lat) / 2), 2) \
                     + cos(radians(a.lat)) * cos(radians(b.lat)) \
                     * power(sin(radians(b.lon - a.lon) / 2), 2)))) AS metres \
                 FROM gnss a JOIN gnss b ON a.device_id = b.device_id \
                   AND a.upload_id < b.upload_id \
                   AND date_trunc('second', a.ts) = date_trunc('second', b.ts) \
                 WHERE a.ts >= $1 AND a.ts < $2 \
                 GROUP BY a.device_id, a.upload_id, b.upload_id ORDER BY 1, 2, 3",
                vec![timestamp(span.start), timestamp(span.end)],
            )
            .await?;
        let mut out = Vec::new();
        for b in &batches {
            let (dev, first, second) = (
                strings(b, "device_id")?,
                strings(b, "first")?,
                strings(b, "second")?,
            );
            let metres = f64s(b, "metres")?;
            for i in 0..b.num_rows() {
                out.push(SameSecond {
                    device_id: stored(&dev[i], "device id")?,
                    first: stored(&first[i], "upload id")?,
                    second: stored(&second[i], "upload id")?,
                    metres: metres[i],
                });
            }
        }
        Ok(out)
    }

    /// For every cell at `resolution` with a published frame before
    /// `before`, the time (microseconds) of its latest one.
    pub async fn last_covered_before(
        &self,
        before: DateTime<Utc>,
        resolution: Resolution,
    ) -> Result<Vec<(u64, i64)>> {
        let batches = self
            .read(
                "SELECT cell, max(ts) AS last FROM \
                 (SELECT h3_cell_to_parent(cell, $1) AS cell, ts FROM frames \
                  WHERE image_key IS NOT NULL AND ts < $2) GROUP BY cell",
                vec![i64::from(u8::from(resolution)).into(), timestamp(before)],
            )
            .await?;
        let mut out = Vec::new();
        for b in &batches {
            let (cell, last) = (u64s(b, "cell")?, micros(b, "last")?);
            out.extend(cell.into_iter().zip(last));
        }
        Ok(out)
    }
}

impl crate::Lake {
    /// The ids of every epoch with rows in `rewards` or `fraud_flags`: the
    /// epochs already paid, which a new one may not overlap.
    pub async fn paid_epochs(&self) -> Result<Vec<String>> {
        let batches = self
            .read(
                "SELECT DISTINCT epoch FROM rewards UNION SELECT DISTINCT epoch FROM fraud_flags",
                Vec::new(),
            )
            .await?;
        let mut out = Vec::new();
        for b in &batches {
            out.extend(strings(b, "epoch")?);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}
