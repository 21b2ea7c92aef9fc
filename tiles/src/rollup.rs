//! The coverage layer's rollup: published frames counted per H3 cell at
//! every resolution the map draws (frames, distinct contributors, first
//! and last seen), seeded by one pass over `frames` and then kept up by the
//! rows each later frames commit added. A cold tile's coverage is then a
//! lookup of the few hundred cells it shows, whatever the lake's history.
//!
//! Privacy zones are applied as the rows are counted; when something
//! published is hidden (a zone declared or withdrawn, a contributor
//! forgotten) the rollup is counted again from the frames.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use h3o::Resolution;
use hexroad_lake::columns::{f64s, i64s, opt_strings, strings, times};
use hexroad_lake::{
    Appended, BoundingBox, CoverageCell, CoveragePart, Lake, PrivacyZones, TableName,
};
use hexroad_wire::ContributorId;

use crate::Result;

/// How a rollup catches up: rows to count, or a fresh count to take over.
pub(crate) enum Step {
    Rows(Appended),
    Seeded(Rollup),
}

/// One cell's published frames.
#[derive(Debug, Clone, Default)]
struct Tally {
    frames: u64,
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
    /// Contributors, as numbers from [`Rollup::people`], sorted.
    contributors: Vec<u32>,
}

impl Tally {
    fn add(&mut self, who: u32, frames: u64, first: DateTime<Utc>, last: DateTime<Utc>) {
        self.frames += frames;
        self.first = Some(self.first.map_or(first, |f| f.min(first)));
        self.last = Some(self.last.map_or(last, |l| l.max(last)));
        if let Err(at) = self.contributors.binary_search(&who) {
            self.contributors.insert(at, who);
        }
    }
}

/// Coverage per cell at resolutions `0..=finest`.
#[derive(Debug)]
pub(crate) struct Rollup {
    /// The `frames` version counted so far.
    version: u64,
    /// The lake's hidden-change marker when it was seeded.
    hidden: Option<String>,
    /// The active privacy zones applied to newly counted frames.
    zones: PrivacyZones,
    /// Contributors numbered, so a cell holds small integers.
    people: HashMap<ContributorId, u32>,
    /// Per resolution, from 0 to the finest drawn.
    levels: Vec<HashMap<u64, Tally>>,
}

impl Rollup {
    /// Counts every published frame of the lake's latest version.
    pub(crate) async fn seed(lake: &Lake, finest: Resolution) -> Result<Self> {
        let hidden = lake.hidden_generation().await?;
        let snapshot = lake.snapshot().await?;
        let frames_version = snapshot
            .versions()
            .iter()
            .find(|(t, _)| *t == TableName::Frames)
            .map_or(0, |(_, v)| *v);
        let zones = PrivacyZones::new(snapshot.privacy_zones().await?);
        let parts = snapshot.coverage_parts(finest).await?;
        let mut rollup = Self {
            version: frames_version,
            hidden,
            zones,
            people: HashMap::new(),
            levels: vec![HashMap::new(); usize::from(u8::from(finest)) + 1],
        };
        for p in parts {
            rollup.add(p);
        }
        Ok(rollup)
    }

    /// What brings the rollup up to the lake's latest frames: the rows
    /// added since the version counted, or a fresh count when something
    /// published was hidden since, or the commits since are no longer kept.
    /// Reads the lake only; [`Rollup::apply`] then counts the rows.
    pub(crate) async fn next_step(&self, lake: &Lake) -> Result<Step> {
        let finest = self.finest();
        if lake.hidden_generation().await? != self.hidden {
            return Ok(Step::Seeded(Self::seed(lake, finest).await?));
        }
        match lake.appended_since(TableName::Frames, self.version).await {
            Ok(appended) => Ok(Step::Rows(appended)),
            Err(e) => {
                tracing::debug!(error = %e, "coverage rollup counted afresh");
                Ok(Step::Seeded(Self::seed(lake, finest).await?))
            }
        }
    }

    /// Counts the published frames among rows a frames commit added.
    pub(crate) fn apply(&mut self, appended: &Appended) -> Result<()> {
        let finest = self.finest();
        for batch in &appended.batches {
            let cells = i64s(batch, "cell")?;
            let images = opt_strings(batch, "image_key")?;
            let who = strings(batch, "contributor_id")?;
            let ts = times(batch, "ts")?;
            let (lat, lon) = (f64s(batch, "lat")?, f64s(batch, "lon")?);
            for r in 0..batch.num_rows() {
                let Ok(contributor) = who[r].parse::<ContributorId>() else {
                    continue;
                };
                let cell = hexroad_lake::grid::cell_from_stored(cells[r]);
                let (Some(cell), Some(_)) = (cell, &images[r]) else {
                    continue;
                };
                if self.zones.hides(&contributor, lat[r], lon[r]) {
                    continue;
                }
                let Some(cell) = cell.parent(finest) else {
                    continue;
                };
                self.add(CoveragePart {
                    cell,
                    contributor_id: contributor,
                    frames: 1,
                    first_seen: ts[r],
                    last_seen: ts[r],
                });
            }
        }
        self.version = self.version.max(appended.version);
        Ok(())
    }

    /// The resolution cells are counted at, finest first drawn.
    pub(crate) fn finest(&self) -> Resolution {
        let finest = u8::try_from(self.levels.len().saturating_sub(1)).unwrap_or(0);
        Resolution::try_from(finest).unwrap_or(Resolution::Zero)
    }

    /// Counts a part in its cell and every coarser one.
    fn add(&mut self, part: CoveragePart) {
        let next = u32::try_from(self.people.len()).unwrap_or(u32::MAX);
        let who = *self.people.entry(part.contributor_id).or_insert(next);
        for (res, level) in self.levels.iter_mut().enumerate() {
            let res = u8::try_from(res).unwrap_or(0);
            let Some(cell) = Resolution::try_from(res)
                .ok()
                .and_then(|r| part.cell.parent(r))
            else {
                continue;
            };
            level.entry(u64::from(cell)).or_default().add(
                who,
                part.frames,
                part.first_seen,
                part.last_seen,
            );
        }
    }

    /// The cells at `resolution` with published frames that may reach into
    /// `area`: every cell the area touches (a few more at its edges, which
    /// a tile's clipping drops).
    pub(crate) fn coverage_in(
        &self,
        area: BoundingBox,
        resolution: Resolution,
    ) -> Vec<CoverageCell> {
        let Some(level) = self.levels.get(usize::from(u8::from(resolution))) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let cells = hexroad_lake::grid::cells_touching(
            area.south, area.north, area.west, area.east, resolution,
        );
        for cell in cells {
            let Some(t) = level.get(&u64::from(cell)) else {
                continue;
            };
            let (Some(first_seen), Some(last_seen)) = (t.first, t.last) else {
                continue;
            };
            out.push(CoverageCell {
                cell,
                frames: t.frames,
                contributors: t.contributors.len() as u64,
                first_seen,
                last_seen,
            });
        }
        out
    }
}
