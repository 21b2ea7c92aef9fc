//! Point lookups in `uploads`, by upload id and by content hash: what the
//! ingest path asks of history that the recent uploads in memory do not
//! answer. `uploads` files carry Parquet bloom filters on both columns
//! (`store/compact.rs`), so a lookup reads the row groups that may hold
//! one of its keys, not the whole column: its cost follows the number of
//! row groups, a small fixed read each, rather than the rows in them.

use deltalake::datafusion::scalar::ScalarValue;

use crate::store::UploadSummary;
use crate::{Lake, Result, TableName, UploadId};

/// The columns an [`UploadSummary`] is read from.
const SUMMARY: &str = "upload_id, device_id, sha256, status, reject_reason, bytes";

/// Keys per query: the text grows with the list (one placeholder each).
const KEYS_PER_QUERY: usize = 512;

impl Lake {
    /// The stored uploads among `ids`.
    pub(crate) async fn stored_by_id(&self, ids: &[UploadId]) -> Result<Vec<UploadSummary>> {
        let keys: Vec<String> = ids.iter().map(UploadId::to_string).collect();
        self.lookup_uploads("upload_id", &keys).await
    }

    /// The stored uploads (any status) whose bytes hash to one of `shas`.
    pub(crate) async fn stored_by_sha(&self, shas: &[String]) -> Result<Vec<UploadSummary>> {
        self.lookup_uploads("sha256", shas).await
    }

    /// `uploads` rows whose `column` (one of two fixed names) is one of
    /// `keys`, bound as parameters.
    async fn lookup_uploads(&self, column: &str, keys: &[String]) -> Result<Vec<UploadSummary>> {
        let mut out = Vec::new();
        if keys.is_empty() {
            return Ok(out);
        }
        let ctx = self.lookup_session(TableName::Uploads).await?;
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {SUMMARY} FROM uploads WHERE {column} IN ({})",
                placeholders.join(", ")
            );
            let params: Vec<ScalarValue> = chunk.iter().map(|k| k.as_str().into()).collect();
            let frame = ctx.sql(&sql).await?.with_param_values(params)?;
            for batch in frame.collect().await? {
                out.extend(crate::store::summaries(&batch)?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::datafusion::physical_plan::metrics::MetricValue;
    use deltalake::datafusion::physical_plan::{ExecutionPlan, collect};

    use super::*;
    use crate::{ContributorId, DeviceId, UploadKind, UploadRecord, UploadStatus};

    fn record(n: usize) -> UploadRecord {
        UploadRecord {
            upload_id: UploadId::new_random(),
            device_id: DeviceId::from_public_key(&[n as u8; 32]),
            contributor_id: "bob".parse::<ContributorId>().unwrap(),
            kind: UploadKind::Gnss,
            format: "gpx".into(),
            drive_id: None,
            bytes: 1,
            sha256: format!("{n:064x}"),
            object_key: String::new(),
            received_at: chrono::Utc::now(),
            status: UploadStatus::Accepted,
            reject_reason: None,
            duplicate_of: None,
            media: None,
        }
    }

    /// Row groups the scans under `plan` checked against bloom filters,
    /// and how many of them the filters let through.
    fn bloom_checked(plan: &Arc<dyn ExecutionPlan>) -> (usize, usize) {
        let mut out = (0, 0);
        if let Some(metrics) = plan.metrics() {
            for metric in metrics.iter() {
                if let MetricValue::PruningMetrics {
                    name,
                    pruning_metrics,
                } = metric.value()
                    && name == "row_groups_pruned_bloom_filter"
                {
                    out.0 += pruning_metrics.pruned() + pruning_metrics.matched();
                    out.1 += pruning_metrics.matched();
                }
            }
        }
        for child in plan.children() {
            let (checked, passed) = bloom_checked(child);
            out = (out.0 + checked, out.1 + passed);
        }
        out
    }

    /// A key inside a row group's min/max that the row group does not hold
    /// is ruled out by its bloom filter, without reading the column.
    #[tokio::test]
    async fn a_lookup_skips_the_row_groups_its_keys_are_not_in() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(&dir.path().to_string_lossy()).await.unwrap();
        for n in [0, 1, 3, 4] {
            lake.commit_upload(record(n), &[], &[]).await.unwrap();
        }
        lake.maintain(&crate::Maintenance {
            compact_over_files: 1,
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(lake.data_files(TableName::Uploads).await.unwrap(), 1);
        let ctx = lake.lookup_session(TableName::Uploads).await.unwrap();
        let scan = |n: usize| {
            let ctx = ctx.clone();
            async move {
                let plan = ctx
                    .sql("SELECT upload_id FROM uploads WHERE sha256 IN ($1)")
                    .await
                    .unwrap()
                    .with_param_values(vec![ScalarValue::from(format!("{n:064x}").as_str())])
                    .unwrap()
                    .create_physical_plan()
                    .await
                    .unwrap();
                let rows: usize = collect(Arc::clone(&plan), ctx.task_ctx())
                    .await
                    .unwrap()
                    .iter()
                    .map(|b| b.num_rows())
                    .sum();
                (rows, bloom_checked(&plan))
            }
        };
        assert_eq!(scan(3).await, (1, (1, 1)), "a stored key is read");
        assert_eq!(scan(2).await, (0, (1, 0)), "a missing one is not");
        assert_eq!(
            lake.stored_by_sha(&[format!("{:064x}", 3), format!("{:064x}", 2)])
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
