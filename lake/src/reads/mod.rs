//! Typed reads: the queries hexroad's own stages make over its tables.
//!
//! Every query over the tables that another crate needs lives in this
//! module, with its parameters bound through DataFusion (`$1`, `$2`, …,
//! never spliced into the text) and its answer decoded into domain types by
//! column name, through casts that fail with an error rather than a panic.
//! A schema change breaks the readers here, in one place. One file per
//! stage that reads: [`vision`], [`map`], [`epoch`].

use chrono::{DateTime, Utc};
use deltalake::arrow::array::RecordBatch;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::datafusion::scalar::ScalarValue;
use h3o::CellIndex;

use crate::columns::u64s;
use crate::{Error, Lake, Result, TableName};

/// The SQL condition "the point `$lat, $lon` of contributor `$who` is not
/// inside one of that contributor's active privacy zones" (column names,
/// fixed at compile time: nothing from outside is spliced).
macro_rules! outside_privacy_zones {
    ($lat:literal, $lon:literal, $who:literal) => {
        concat!(
            "NOT EXISTS (SELECT 1 FROM (SELECT contributor_id, lat, lon, radius_m, status, \
               row_number() OVER (PARTITION BY zone_id ORDER BY changed_at DESC) AS n \
               FROM privacy_zones) z \
             WHERE z.n = 1 AND z.status = 'active' AND z.contributor_id = ",
            $who,
            " AND 2 * 6371008.8 * asin(sqrt(power(sin(radians(",
            $lat,
            " - z.lat) / 2), 2) + cos(radians(z.lat)) * cos(radians(",
            $lat,
            ")) * power(sin(radians(",
            $lon,
            " - z.lon) / 2), 2))) <= z.radius_m)"
        )
    };
}
pub(crate) use outside_privacy_zones;

pub mod changes;
pub mod epoch;
pub mod map;
mod uploads;
pub mod vision;

/// An area on the globe, in degrees, edges included.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundingBox {
    pub south: f64,
    pub north: f64,
    pub west: f64,
    pub east: f64,
}

impl BoundingBox {
    /// `south, north, west, east` as the `$1…$4` of a query.
    pub(crate) fn params(self) -> Vec<ScalarValue> {
        vec![
            self.south.into(),
            self.north.into(),
            self.west.into(),
            self.east.into(),
        ]
    }

    /// The condition "`column` (a resolution-15 cell) lies in one of the
    /// cell ranges covering the area", its bounds appended to `params` as
    /// the next placeholders. Tables compacted in cell order keep an area's
    /// rows together, so this lets the scan skip every file, row group and
    /// page outside the area; the latitude and longitude tests stay the
    /// exact ones. `TRUE` for an area too wide to be worth ranges.
    pub(crate) fn cells_condition(self, column: &str, params: &mut Vec<ScalarValue>) -> String {
        let Some(ranges) = crate::grid::cell_ranges(self.south, self.north, self.west, self.east)
        else {
            return "TRUE".into();
        };
        let mut terms = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            params.push(ScalarValue::UInt64(Some(lo)));
            params.push(ScalarValue::UInt64(Some(hi)));
            let n = params.len();
            terms.push(format!("{column} BETWEEN ${} AND ${n}", n - 1));
        }
        format!("({})", terms.join(" OR "))
    }
}

/// The tables at one moment: every read through one snapshot sees the
/// same versions, and later commits do not change its answers.
#[derive(Clone)]
pub struct Snapshot {
    ctx: SessionContext,
    versions: Vec<(TableName, u64)>,
}

impl Snapshot {
    /// The version of each table this snapshot reads.
    pub fn versions(&self) -> &[(TableName, u64)] {
        &self.versions
    }

    /// Runs one of the queries of this module with its parameters bound.
    pub(crate) async fn read(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<Vec<RecordBatch>> {
        let frame = self.ctx.sql(sql).await?.with_param_values(params)?;
        Ok(frame.collect().await?)
    }

    /// Like [`Snapshot::read`], for answers too large to hold at once:
    /// batches arrive as the query makes them.
    pub(crate) async fn stream(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<deltalake::datafusion::execution::SendableRecordBatchStream> {
        let frame = self.ctx.sql(sql).await?.with_param_values(params)?;
        Ok(frame.execute_stream().await?)
    }
}

impl Lake {
    /// Every table at its latest version.
    pub async fn snapshot(&self) -> Result<Snapshot> {
        let (ctx, versions) = self.session_with_versions().await?;
        Ok(Snapshot { ctx, versions })
    }

    /// Every table as it was at `at` (Delta time travel): what an epoch
    /// closed at `at` is computed from, however much is committed later.
    pub async fn snapshot_as_of(&self, at: DateTime<Utc>) -> Result<Snapshot> {
        let (ctx, versions) = self.session_as_of(at).await?;
        Ok(Snapshot { ctx, versions })
    }

    /// Which of `uploads` have rows in `table` (GNSS or telemetry): what a
    /// group commit cut by a crash may have left (`store/inflight.rs`).
    pub(crate) async fn uploads_with_rows(
        &self,
        table: TableName,
        uploads: &[crate::UploadId],
    ) -> Result<Vec<crate::UploadId>> {
        if uploads.is_empty() {
            return Ok(Vec::new());
        }
        // One placeholder per id: the text grows with the list, never with
        // what the ids say; the table name is one of two fixed words.
        let placeholders: Vec<String> = (1..=uploads.len()).map(|i| format!("${i}")).collect();
        let from = match table {
            TableName::Telemetry => "telemetry",
            _ => "gnss",
        };
        let sql = format!(
            "SELECT DISTINCT upload_id FROM {from} WHERE upload_id IN ({})",
            placeholders.join(", ")
        );
        let params = uploads.iter().map(|u| u.to_string().into()).collect();
        let mut out = Vec::new();
        for batch in self.read(&sql, params).await? {
            for id in crate::columns::strings(&batch, "upload_id")? {
                out.push(stored(&id, "upload id")?);
            }
        }
        Ok(out)
    }

    /// Runs one of the queries below, with its parameters bound, on the
    /// latest version of the tables.
    pub(crate) async fn read(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
    ) -> Result<Vec<RecordBatch>> {
        self.snapshot().await?.read(sql, params).await
    }
}

/// A `cell` column as indexes; a value that is not a cell is skipped.
pub(crate) fn cells(batches: &[RecordBatch]) -> Result<Vec<CellIndex>> {
    let mut out = Vec::new();
    for b in batches {
        out.extend(
            u64s(b, "cell")?
                .into_iter()
                .filter_map(|c| CellIndex::try_from(c).ok()),
        );
    }
    Ok(out)
}

/// An instant as the tables hold it (microseconds, UTC).
pub(crate) fn timestamp(at: DateTime<Utc>) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(at.timestamp_micros()), Some("UTC".into()))
}

/// A stored id read back; one that does not parse is a broken invariant.
pub(crate) fn stored<T: std::str::FromStr>(text: &str, what: &str) -> Result<T> {
    text.parse().map_err(|_| malformed(text, what))
}

pub(crate) fn malformed(text: &str, what: &str) -> Error {
    Error::Internal(format!("stored {what} {text:?} is malformed"))
}
