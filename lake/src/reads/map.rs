//! What the map reads: coverage, frames and tracks inside a tile, the
//! published extent, the cells new frames fall in, and a frame's image.

use chrono::{DateTime, Utc};
use h3o::CellIndex;

use super::{BoundingBox, Snapshot, cells, stored};
use crate::columns::{f64s, i64s, opt_f64s, strings, times, u64s};
use crate::{ContributorId, DeviceId, FrameId, Lake, Result, UploadId};

/// One hexagon of the coverage layer: the published frames in a cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoverageCell {
    pub cell: CellIndex,
    pub frames: u64,
    pub contributors: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// One contributor's published frames in one cell: the part of a
/// [`CoverageCell`] the tile server's coverage rollup is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct CoveragePart {
    pub cell: CellIndex,
    pub contributor_id: ContributorId,
    pub frames: u64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

/// A published frame as the map draws it.
#[derive(Debug, Clone, PartialEq)]
pub struct FramePoint {
    pub frame_id: FrameId,
    pub ts: DateTime<Utc>,
    pub heading: f64,
    pub lat: f64,
    pub lon: f64,
    pub contributor_id: ContributorId,
    pub image_key: String,
}

/// One fix of an accepted track, as the map draws it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackFix {
    pub upload_id: UploadId,
    pub device_id: DeviceId,
    pub lat: f64,
    pub lon: f64,
}

/// Where a drive (one accepted GNSS upload) began and ended: the places a
/// public map must not show (homes, workplaces).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriveEnds {
    pub upload_id: UploadId,
    /// (lat, lon) of the first fix.
    pub start: (f64, f64),
    /// (lat, lon) of the last fix.
    pub end: (f64, f64),
}

impl Snapshot {
    /// Published frames inside `area`, grouped by their cell at `resolution`.
    pub async fn coverage_in(
        &self,
        area: BoundingBox,
        resolution: h3o::Resolution,
    ) -> Result<Vec<CoverageCell>> {
        let mut params = vec![
            i64::from(u8::from(resolution)).into(),
            area.south.into(),
            area.north.into(),
            area.west.into(),
            area.east.into(),
        ];
        let cells = area.cells_condition("f.cell", &mut params);
        let sql = format!(
            "SELECT cell, count(*) AS frames, count(DISTINCT contributor_id) AS contributors, \
             min(ts) AS first_seen, max(ts) AS last_seen FROM \
             (SELECT h3_cell_to_parent(f.cell, $1) AS cell, f.contributor_id, f.ts \
              FROM frames f WHERE f.image_key IS NOT NULL AND {cells} \
              AND f.lat BETWEEN $2 AND $3 AND f.lon BETWEEN $4 AND $5 AND {}) GROUP BY cell",
            outside_privacy_zones!("f.lat", "f.lon", "f.contributor_id"),
        );
        let batches = self.read(&sql, params).await?;
        let mut out = Vec::new();
        for b in &batches {
            let cell = u64s(b, "cell")?;
            let frames = i64s(b, "frames")?;
            let contributors = i64s(b, "contributors")?;
            let first = times(b, "first_seen")?;
            let last = times(b, "last_seen")?;
            for r in 0..b.num_rows() {
                let Ok(cell) = CellIndex::try_from(cell[r]) else {
                    continue;
                };
                out.push(CoverageCell {
                    cell,
                    frames: frames[r].unsigned_abs(),
                    contributors: contributors[r].unsigned_abs(),
                    first_seen: first[r],
                    last_seen: last[r],
                });
            }
        }
        Ok(out)
    }

    /// Every published frame outside its contributor's privacy zones,
    /// counted per cell at `resolution` and contributor: one pass over the
    /// frames that seeds a rollup, which later frames then add to.
    pub async fn coverage_parts(&self, resolution: h3o::Resolution) -> Result<Vec<CoveragePart>> {
        let sql = concat!(
            "SELECT cell, contributor_id, count(*) AS frames, min(ts) AS first_seen, \
             max(ts) AS last_seen FROM \
             (SELECT h3_cell_to_parent(f.cell, $1) AS cell, f.contributor_id, f.ts \
              FROM frames f WHERE f.image_key IS NOT NULL AND ",
            outside_privacy_zones!("f.lat", "f.lon", "f.contributor_id"),
            ") GROUP BY cell, contributor_id"
        );
        let params = vec![i64::from(u8::from(resolution)).into()];
        let mut out = Vec::new();
        for b in &self.read(sql, params).await? {
            let cell = u64s(b, "cell")?;
            let who = strings(b, "contributor_id")?;
            let frames = i64s(b, "frames")?;
            let (first, last) = (times(b, "first_seen")?, times(b, "last_seen")?);
            for r in 0..b.num_rows() {
                let Ok(cell) = CellIndex::try_from(cell[r]) else {
                    continue;
                };
                out.push(CoveragePart {
                    cell,
                    contributor_id: stored(&who[r], "contributor id")?,
                    frames: frames[r].unsigned_abs(),
                    first_seen: first[r],
                    last_seen: last[r],
                });
            }
        }
        Ok(out)
    }

    /// Published frames inside `area`, oldest first.
    pub async fn frames_in(&self, area: BoundingBox) -> Result<Vec<FramePoint>> {
        let mut params = area.params();
        let cells = area.cells_condition("f.cell", &mut params);
        let sql = format!(
            "SELECT f.frame_id, f.ts, f.heading, f.lat, f.lon, f.contributor_id, f.image_key \
             FROM frames f WHERE f.image_key IS NOT NULL AND {cells} \
             AND f.lat BETWEEN $1 AND $2 AND f.lon BETWEEN $3 AND $4 AND {} ORDER BY f.ts",
            outside_privacy_zones!("f.lat", "f.lon", "f.contributor_id"),
        );
        let batches = self.read(&sql, params).await?;
        let mut out = Vec::new();
        for b in &batches {
            let ids = strings(b, "frame_id")?;
            let ts = times(b, "ts")?;
            let heading = f64s(b, "heading")?;
            let lat = f64s(b, "lat")?;
            let lon = f64s(b, "lon")?;
            let who = strings(b, "contributor_id")?;
            let keys = strings(b, "image_key")?;
            for r in 0..b.num_rows() {
                out.push(FramePoint {
                    frame_id: stored(&ids[r], "frame id")?,
                    ts: ts[r],
                    heading: heading[r],
                    lat: lat[r],
                    lon: lon[r],
                    contributor_id: stored(&who[r], "contributor id")?,
                    image_key: keys[r].clone(),
                });
            }
        }
        Ok(out)
    }

    /// Fixes of accepted uploads inside `area`, by upload then time.
    pub async fn track_fixes_in(&self, area: BoundingBox) -> Result<Vec<TrackFix>> {
        let mut params = area.params();
        let cells = area.cells_condition("g.cell", &mut params);
        let sql = format!(
            "SELECT g.upload_id, g.device_id, g.lat, g.lon FROM gnss g \
             JOIN (SELECT upload_id, contributor_id FROM uploads WHERE status = 'accepted') u \
               ON g.upload_id = u.upload_id \
             WHERE {cells} AND g.lat BETWEEN $1 AND $2 AND g.lon BETWEEN $3 AND $4 AND {} \
             ORDER BY g.upload_id, g.ts",
            outside_privacy_zones!("g.lat", "g.lon", "u.contributor_id"),
        );
        let batches = self.read(&sql, params).await?;
        let mut out = Vec::new();
        for b in &batches {
            let uploads = strings(b, "upload_id")?;
            let devices = strings(b, "device_id")?;
            let lat = f64s(b, "lat")?;
            let lon = f64s(b, "lon")?;
            for r in 0..b.num_rows() {
                out.push(TrackFix {
                    upload_id: stored(&uploads[r], "upload id")?,
                    device_id: stored(&devices[r], "device id")?,
                    lat: lat[r],
                    lon: lon[r],
                });
            }
        }
        Ok(out)
    }

    /// The first and last fix of every accepted drive with a fix inside
    /// `area`, wherever those ends lie.
    pub async fn drive_ends_near(&self, area: BoundingBox) -> Result<Vec<DriveEnds>> {
        let mut params = area.params();
        let cells = area.cells_condition("cell", &mut params);
        let sql = format!(
            "SELECT g.upload_id, g.ts, g.lat, g.lon, e.t0, e.t1 FROM gnss g JOIN \
               (SELECT upload_id, min(ts) AS t0, max(ts) AS t1 FROM gnss WHERE upload_id IN \
                 (SELECT DISTINCT upload_id FROM gnss \
                  WHERE {cells} AND lat BETWEEN $1 AND $2 AND lon BETWEEN $3 AND $4) \
                AND upload_id IN (SELECT upload_id FROM uploads WHERE status = 'accepted') \
                GROUP BY upload_id) e \
             ON g.upload_id = e.upload_id AND (g.ts = e.t0 OR g.ts = e.t1)"
        );
        let batches = self.read(&sql, params).await?;
        let mut ends: std::collections::HashMap<UploadId, DriveEnds> =
            std::collections::HashMap::new();
        for b in &batches {
            let uploads = strings(b, "upload_id")?;
            let (ts, t0) = (times(b, "ts")?, times(b, "t0")?);
            let (lat, lon) = (f64s(b, "lat")?, f64s(b, "lon")?);
            for r in 0..b.num_rows() {
                let id: UploadId = stored(&uploads[r], "upload id")?;
                let here = (lat[r], lon[r]);
                let entry = ends.entry(id).or_insert(DriveEnds {
                    upload_id: id,
                    start: here,
                    end: here,
                });
                if ts[r] == t0[r] {
                    entry.start = here;
                } else {
                    entry.end = here;
                }
            }
        }
        Ok(ends.into_values().collect())
    }
}

impl Lake {
    /// How many frame rows there are, published or not.
    pub async fn frame_count(&self) -> Result<u64> {
        let batches = self
            .read("SELECT count(*) AS n FROM frames", Vec::new())
            .await?;
        let mut total = 0u64;
        for b in &batches {
            total += i64s(b, "n")?.iter().map(|n| *n as u64).sum::<u64>();
        }
        Ok(total)
    }

    /// The box around every published frame; `None` before the first.
    pub async fn published_bounds(&self) -> Result<Option<BoundingBox>> {
        let batches = self
            .read(
                "SELECT min(lon) AS w, min(lat) AS s, max(lon) AS e, max(lat) AS n \
                 FROM frames WHERE image_key IS NOT NULL",
                Vec::new(),
            )
            .await?;
        for b in batches.iter().filter(|b| b.num_rows() > 0) {
            let [w, s, e, n] = ["w", "s", "e", "n"].map(|c| opt_f64s(b, c));
            if let (Some(west), Some(south), Some(east), Some(north)) = (w?[0], s?[0], e?[0], n?[0])
            {
                return Ok(Some(BoundingBox {
                    south,
                    north,
                    west,
                    east,
                }));
            }
        }
        Ok(None)
    }
}

impl Lake {
    /// The resolution-15 cells of the frames `uploads` published.
    pub async fn published_cells(&self, uploads: &[UploadId]) -> Result<Vec<CellIndex>> {
        if uploads.is_empty() {
            return Ok(Vec::new());
        }
        // One placeholder per id: the text grows with the list, never with
        // what the ids say.
        let placeholders: Vec<String> = (1..=uploads.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT DISTINCT cell FROM frames \
             WHERE image_key IS NOT NULL AND upload_id IN ({})",
            placeholders.join(", ")
        );
        let params = uploads.iter().map(|u| u.to_string().into()).collect();
        cells(&self.read(&sql, params).await?)
    }

    /// The resolution-15 cells of every published frame.
    pub async fn all_published_cells(&self) -> Result<Vec<CellIndex>> {
        let sql = "SELECT DISTINCT cell FROM frames WHERE image_key IS NOT NULL";
        cells(&self.read(sql, Vec::new()).await?)
    }

    /// The resolution-15 cells of every accepted GNSS fix.
    pub async fn all_track_cells(&self) -> Result<Vec<CellIndex>> {
        let sql = "SELECT DISTINCT cell FROM gnss WHERE upload_id IN \
                   (SELECT upload_id FROM uploads WHERE status = 'accepted')";
        cells(&self.read(sql, Vec::new()).await?)
    }
}
