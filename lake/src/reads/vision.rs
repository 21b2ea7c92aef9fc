//! What the vision worker reads: uploads waiting for it, their tracks, and
//! the published frames a new one may duplicate.

use chrono::{DateTime, Utc};
use deltalake::arrow::array::RecordBatch;
use h3o::CellIndex;

use super::{BoundingBox, malformed, stored, timestamp};
use crate::columns::{f64s, opt_f64s, opt_strings, strings, times, u64s};
use crate::{ContributorId, DeviceId, FrameId, GnssPoint, Lake, Result, UploadId, UploadKind};

/// An accepted upload with pictures that has no final vision verdict yet.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingUpload {
    pub upload_id: UploadId,
    pub device_id: DeviceId,
    pub contributor_id: ContributorId,
    pub kind: UploadKind,
    pub drive_id: Option<String>,
    pub object_key: String,
    pub received_at: DateTime<Utc>,
    pub media: Option<String>,
}

/// A published frame, as the near-duplicate check compares against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedHash {
    pub frame_id: FrameId,
    pub cell: CellIndex,
    pub phash: u64,
}

impl Lake {
    /// Accepted video and frame-bundle uploads without a `processed` or
    /// `rejected` verdict (failed ones are retried), oldest first.
    pub async fn pending_uploads(&self) -> Result<Vec<PendingUpload>> {
        let batches = self
            .read(
                "SELECT upload_id, device_id, contributor_id, kind, drive_id, object_key, \
                 received_at, media FROM uploads \
                 WHERE status = 'accepted' AND kind IN ($1, $2) \
                 AND upload_id NOT IN (SELECT upload_id FROM processing \
                                       WHERE status IN ('processed', 'rejected')) \
                 ORDER BY received_at, upload_id",
                vec![
                    UploadKind::Video.as_str().into(),
                    UploadKind::Frames.as_str().into(),
                ],
            )
            .await?;
        let mut out = Vec::new();
        for b in &batches {
            out.extend(pending_from_batch(b)?);
        }
        Ok(out)
    }

    /// Why ingest refused `device`'s GNSS track for `drive`, if it did.
    pub async fn refused_track(&self, device: &DeviceId, drive: &str) -> Result<Option<String>> {
        let batches = self
            .read(
                "SELECT reject_reason FROM uploads WHERE kind = $1 AND status = 'rejected' \
                 AND device_id = $2 AND drive_id = $3 LIMIT 1",
                vec![
                    UploadKind::Gnss.as_str().into(),
                    device.as_str().into(),
                    drive.into(),
                ],
            )
            .await?;
        match batches.iter().find(|b| b.num_rows() > 0) {
            Some(b) => {
                let reasons = opt_strings(b, "reject_reason")?;
                Ok(Some(
                    reasons[0].clone().unwrap_or_else(|| "rejected".to_owned()),
                ))
            }
            None => Ok(None),
        }
    }

    /// The fixes of `device`'s accepted GNSS uploads for `drive`: the track
    /// a video of that drive is placed on.
    pub async fn drive_track(&self, device: &DeviceId, drive: &str) -> Result<Vec<GnssPoint>> {
        let batches = self
            .read(
                "SELECT g.ts, g.lat, g.lon, g.speed, g.heading FROM gnss g \
                 JOIN uploads u ON g.upload_id = u.upload_id \
                 WHERE u.status = 'accepted' AND u.kind = $1 \
                 AND u.device_id = $2 AND u.drive_id = $3",
                vec![
                    UploadKind::Gnss.as_str().into(),
                    device.as_str().into(),
                    drive.into(),
                ],
            )
            .await?;
        track_points(&batches)
    }

    /// The fixes that came inside an upload (a frame bundle's own track).
    pub async fn upload_track(&self, upload: UploadId) -> Result<Vec<GnssPoint>> {
        let batches = self
            .read(
                "SELECT g.ts, g.lat, g.lon, g.speed, g.heading FROM gnss g \
                 JOIN uploads u ON g.upload_id = u.upload_id \
                 WHERE u.status = 'accepted' AND g.upload_id = $1",
                vec![upload.to_string().into()],
            )
            .await?;
        track_points(&batches)
    }

    /// Published frames of other uploads than `except`, taken since `since`
    /// inside `area`: what a new frame may be a near-duplicate of.
    pub async fn published_hashes(
        &self,
        area: BoundingBox,
        since: DateTime<Utc>,
        except: UploadId,
    ) -> Result<Vec<PublishedHash>> {
        let batches = self
            .read(
                "SELECT frame_id, cell, phash FROM frames WHERE image_key IS NOT NULL \
                 AND upload_id <> $1 AND ts >= $2 \
                 AND lat BETWEEN $3 AND $4 AND lon BETWEEN $5 AND $6",
                vec![
                    except.to_string().into(),
                    timestamp(since),
                    area.south.into(),
                    area.north.into(),
                    area.west.into(),
                    area.east.into(),
                ],
            )
            .await?;
        let mut out = Vec::new();
        for b in &batches {
            let ids = strings(b, "frame_id")?;
            let cells = u64s(b, "cell")?;
            let hashes = strings(b, "phash")?;
            for r in 0..b.num_rows() {
                // A row that does not decode is skipped: it can only make a
                // frame look new, never hide one.
                if let (Ok(frame_id), Ok(cell), Ok(phash)) = (
                    ids[r].parse(),
                    CellIndex::try_from(cells[r]),
                    u64::from_str_radix(&hashes[r], 16),
                ) {
                    out.push(PublishedHash {
                        frame_id,
                        cell,
                        phash,
                    });
                }
            }
        }
        Ok(out)
    }
}

fn track_points(batches: &[RecordBatch]) -> Result<Vec<GnssPoint>> {
    let mut points = Vec::new();
    for b in batches {
        let ts = times(b, "ts")?;
        let lat = f64s(b, "lat")?;
        let lon = f64s(b, "lon")?;
        let speed = opt_f64s(b, "speed")?;
        let heading = opt_f64s(b, "heading")?;
        for r in 0..b.num_rows() {
            points.push(GnssPoint {
                ts: ts[r],
                lat: lat[r],
                lon: lon[r],
                alt: None,
                speed: speed[r],
                heading: heading[r],
                hdop: None,
            });
        }
    }
    Ok(points)
}

/// `uploads` rows as [`PendingUpload`]s, by column name.
pub(super) fn pending_from_batch(b: &RecordBatch) -> Result<Vec<PendingUpload>> {
    let ids = strings(b, "upload_id")?;
    let devices = strings(b, "device_id")?;
    let contributors = strings(b, "contributor_id")?;
    let kinds = strings(b, "kind")?;
    let drives = opt_strings(b, "drive_id")?;
    let keys = strings(b, "object_key")?;
    let received = times(b, "received_at")?;
    let media = opt_strings(b, "media")?;
    (0..b.num_rows())
        .map(|r| {
            Ok(PendingUpload {
                upload_id: stored(&ids[r], "upload id")?,
                device_id: stored(&devices[r], "device id")?,
                contributor_id: stored(&contributors[r], "contributor id")?,
                kind: UploadKind::parse(&kinds[r])
                    .ok_or_else(|| malformed(&kinds[r], "upload kind"))?,
                drive_id: drives[r].clone(),
                object_key: keys[r].clone(),
                received_at: received[r],
                media: media[r].clone(),
            })
        })
        .collect()
}
