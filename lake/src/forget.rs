//! The right to be forgotten: a contributor's rows, frames, images and raw
//! footage removed from the lake with Delta deletes, and the files that
//! held them vacuumed, so no earlier table version can bring them back.
//! Closed epochs' `rewards` and `fraud_flags` rows are left as they were:
//! their amounts are history, already paid and committed to by the
//! published ledger.

use deltalake::datafusion::prelude::{col, lit};
use deltalake::datafusion::scalar::ScalarValue;
use object_store::ObjectStoreExt;

use crate::columns;
use crate::schema::TableName;
use crate::{ContributorId, Error, Lake, Result};

/// What forgetting one contributor removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Forgotten {
    /// Rows deleted, per table (a count of `None` from Delta is 0 here).
    pub rows: Vec<(&'static str, u64)>,
    /// Objects removed: published images and raw uploads.
    pub objects: u64,
    /// Data files vacuumed away.
    pub files_vacuumed: u64,
}

/// Every table holding a contributor's rows, by the column that names the
/// contributor, or the upload or device it made.
const BY_CONTRIBUTOR: [TableName; 6] = [
    TableName::Frames,
    TableName::Uploads,
    TableName::Devices,
    TableName::PrivacyZones,
    TableName::Contributors,
    TableName::Enrolments,
];
const BY_DEVICE: [TableName; 2] = [TableName::Gnss, TableName::Telemetry];
const BY_UPLOAD: [TableName; 1] = [TableName::Processing];

impl Lake {
    /// Removes everything of `contributor` but closed epochs' ledger rows.
    /// Idempotent: forgetting twice removes nothing the second time.
    pub async fn forget_contributor(&self, contributor: &ContributorId) -> Result<Forgotten> {
        let who = ScalarValue::from(contributor.as_str());
        let devices = self
            .read(
                "SELECT DISTINCT device_id FROM devices WHERE contributor_id = $1 \
                 UNION SELECT DISTINCT device_id FROM uploads WHERE contributor_id = $1",
                vec![who.clone()],
            )
            .await?;
        let devices: Vec<String> = flatten(&devices, "device_id")?;
        let uploads = self
            .read(
                "SELECT upload_id, object_key FROM uploads WHERE contributor_id = $1",
                vec![who.clone()],
            )
            .await?;
        let upload_ids = flatten(&uploads, "upload_id")?;
        let mut keys = flatten(&uploads, "object_key")?;
        let images = self
            .read(
                "SELECT image_key FROM frames WHERE contributor_id = $1 AND image_key IS NOT NULL",
                vec![who],
            )
            .await?;
        keys.extend(flatten(&images, "image_key")?);

        // Objects first: a crash part-way leaves rows pointing at nothing,
        // which a second run removes; never images nobody can find again.
        let mut forgotten = Forgotten::default();
        for key in keys.iter().filter(|k| !k.is_empty()) {
            match self.blobs.delete(&key.as_str().into()).await {
                Ok(()) => forgotten.objects += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => {
                    return Err(Error::Blob {
                        key: key.clone(),
                        source,
                    });
                }
            }
        }
        for table in BY_CONTRIBUTOR {
            let n = self
                .delete_where(table, col("contributor_id").eq(lit(contributor.as_str())))
                .await?;
            forgotten.rows.push((table.as_str(), n));
        }
        for (tables, column, values) in [
            (&BY_DEVICE[..], "device_id", &devices),
            (&BY_UPLOAD[..], "upload_id", &upload_ids),
        ] {
            for &table in tables {
                let mut n = 0;
                // A bounded IN list per delete, so one contributor with
                // years of uploads makes several deletes, not one huge plan.
                for chunk in values.chunks(500) {
                    let list = chunk.iter().map(|v| lit(v.as_str())).collect();
                    n += self
                        .delete_where(table, col(column).in_list(list, false))
                        .await?;
                }
                forgotten.rows.push((table.as_str(), n));
            }
        }
        for table in BY_CONTRIBUTOR.iter().chain(&BY_DEVICE).chain(&BY_UPLOAD) {
            forgotten.files_vacuumed += self.vacuum_now(*table).await?;
        }
        self.forget_uploads(&upload_ids);
        self.note_hidden_change().await?;
        Ok(forgotten)
    }

    /// Deletes the rows of `table` matching `predicate` (a typed
    /// expression: nothing is spliced into SQL text); returns how many.
    async fn delete_where(
        &self,
        table: TableName,
        predicate: deltalake::datafusion::prelude::Expr,
    ) -> Result<u64> {
        let _one_writer = self.commit_lock.lock().await;
        let mut guard = self.tables[table.index()].lock().await;
        let delta = |source| Error::Delta {
            table: table.as_str(),
            source,
        };
        let mut current = guard.clone();
        current.update_state().await.map_err(delta)?;
        let mut delete = current.delete().with_predicate(predicate);
        if table == TableName::Uploads {
            // The files it rewrites keep the bloom filters lookups use.
            delete = delete.with_writer_properties(crate::store::uploads_properties());
        }
        let (updated, metrics) = delete.await.map_err(delta)?;
        *guard = updated;
        Ok(metrics.num_deleted_rows.unwrap_or(0) as u64)
    }

    /// Removes the files no current version refers to, at once: what was
    /// deleted cannot be read back through time travel. Returns how many.
    async fn vacuum_now(&self, table: TableName) -> Result<u64> {
        let mut guard = self.tables[table.index()].lock().await;
        let delta = |source| Error::Delta {
            table: table.as_str(),
            source,
        };
        let (updated, metrics) = guard
            .clone()
            .vacuum()
            .with_retention_period(chrono::Duration::zero())
            .with_enforce_retention_duration(false)
            .await
            .map_err(delta)?;
        *guard = updated;
        Ok(metrics.files_deleted.len() as u64)
    }
}

fn flatten(batches: &[deltalake::arrow::array::RecordBatch], column: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for b in batches {
        out.extend(columns::strings(b, column)?);
    }
    Ok(out)
}
