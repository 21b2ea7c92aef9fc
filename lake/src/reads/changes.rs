//! Reads that cost what changed, not what the lake holds: the rows a table
//! gained since a version, from the files its commits after that version
//! added as new data (a compaction's rewrite adds no rows and is skipped).
//! The vision worker learns of new uploads and verdicts this way, and the
//! tile cache of newly processed uploads, instead of rescanning `uploads`
//! and `processing` every poll.

use std::collections::{HashMap, HashSet, VecDeque};

use deltalake::arrow::array::RecordBatch;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::stored;
use super::vision::PendingUpload;
use crate::columns::strings;
use crate::schema::TableName;
use crate::{Error, Lake, Result, UploadId, UploadKind};

/// The rows a table gained between two versions.
#[derive(Debug, Default)]
pub struct Appended {
    /// The version these rows bring the reader to.
    pub version: u64,
    pub batches: Vec<RecordBatch>,
}

impl Lake {
    /// `table`'s latest version.
    pub async fn table_version(&self, table: TableName) -> Result<u64> {
        Ok(self.latest(table).await?.version().unwrap_or(0))
    }

    /// The rows appended to `table` after version `since`, up to its
    /// latest version. Fails when a commit after `since` is no longer
    /// kept (past the retention): the caller starts over from a full read.
    pub async fn appended_since(&self, table: TableName, since: u64) -> Result<Appended> {
        let current = self.latest(table).await?;
        let latest = current.version().unwrap_or(0);
        let mut out = Appended {
            version: latest.max(since),
            batches: Vec::new(),
        };
        let log = current.log_store();
        let store = log.object_store(None);
        for version in since + 1..=latest {
            let Some(commit) = log
                .read_commit_entry(version)
                .await
                .map_err(Error::delta(table))?
            else {
                return Err(Error::Internal(format!(
                    "{} commit {version} is no longer kept",
                    table.as_str()
                )));
            };
            for path in added_data_files(&commit) {
                let location = object_store::path::Path::from_url_path(&path)
                    .map_err(|e| Error::Internal(format!("added file {path:?}: {e}")))?;
                // A commit's new files are one group's rows: small, read whole.
                let batches = read_parquet_object(store.as_ref(), &location, None).await?;
                out.batches.extend(batches);
            }
        }
        Ok(out)
    }
}

/// The rows of the Parquet object at `location`, read whole into memory
/// (for files small enough to hold), as `schema` when given (plain strings,
/// whatever Arrow types the writer embedded) or as the file says.
pub(crate) async fn read_parquet_object(
    store: &dyn object_store::ObjectStore,
    location: &object_store::path::Path,
    schema: Option<deltalake::arrow::datatypes::SchemaRef>,
) -> Result<Vec<RecordBatch>> {
    use object_store::ObjectStoreExt as _;
    let bytes = store
        .get(location)
        .await
        .map_err(Error::blob(location))?
        .bytes()
        .await
        .map_err(Error::blob(location))?;
    let read = |e: deltalake::parquet::errors::ParquetError| {
        Error::Internal(format!("reading {location}: {e}"))
    };
    let mut options = deltalake::parquet::arrow::arrow_reader::ArrowReaderOptions::new();
    if let Some(schema) = schema {
        options = options.with_schema(schema);
    }
    Ok(
        ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, options)
            .map_err(read)?
            .build()
            .map_err(read)?
            .collect::<std::result::Result<Vec<_>, _>>()?,
    )
}

/// The data files a commit added as new rows (`add` with `dataChange`).
fn added_data_files(commit: &[u8]) -> Vec<String> {
    commit
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .filter_map(|action| {
            let add = action.get("add")?;
            if add.get("dataChange").and_then(|v| v.as_bool()) == Some(false) {
                return None;
            }
            add.get("path")?.as_str().map(str::to_owned)
        })
        .collect()
}

/// How many verdicts for uploads this watch has not seen are remembered.
const MAX_EARLY_VERDICTS: usize = 100_000;

/// The vision worker's view of the uploads waiting for it, kept up to date
/// from the commits since its last look: a poll costs the uploads and
/// verdicts that arrived since, and memory holds the backlog only.
#[derive(Debug, Default)]
pub struct PendingWatch {
    uploads_at: u64,
    processing_at: u64,
    pending: HashMap<UploadId, PendingUpload>,
    /// Final verdicts read before their upload's row (another worker was
    /// quicker than this watch): the row is not taken up when it comes.
    early: HashSet<UploadId>,
    early_order: VecDeque<UploadId>,
}

impl Lake {
    /// A watch over the uploads waiting for the vision stage, from one
    /// full read now.
    pub async fn watch_pending(&self) -> Result<PendingWatch> {
        // Versions first: whatever commits during the read below is read
        // again by the next poll, and applying it twice changes nothing.
        let uploads_at = self.table_version(TableName::Uploads).await?;
        let processing_at = self.table_version(TableName::Processing).await?;
        let pending = self
            .pending_uploads()
            .await?
            .into_iter()
            .map(|p| (p.upload_id, p))
            .collect();
        Ok(PendingWatch {
            uploads_at,
            processing_at,
            pending,
            ..PendingWatch::default()
        })
    }

    /// Brings `watch` up to date and returns what waits, oldest first.
    pub async fn poll_pending(&self, watch: &mut PendingWatch) -> Result<Vec<PendingUpload>> {
        // Uploads before verdicts: a verdict is only ever given to an
        // upload already committed.
        let uploads = self
            .appended_since(TableName::Uploads, watch.uploads_at)
            .await?;
        let processing = self
            .appended_since(TableName::Processing, watch.processing_at)
            .await?;
        for batch in &uploads.batches {
            for upload in pending_rows(batch)? {
                if watch.early.remove(&upload.upload_id) {
                    continue;
                }
                watch.pending.insert(upload.upload_id, upload);
            }
        }
        for batch in &processing.batches {
            let ids = strings(batch, "upload_id")?;
            let statuses = strings(batch, "status")?;
            for (id, status) in ids.iter().zip(&statuses) {
                // A failed upload is tried again.
                if status != "processed" && status != "rejected" {
                    continue;
                }
                let id: UploadId = stored(id, "upload id")?;
                if watch.pending.remove(&id).is_none() && watch.early.insert(id) {
                    watch.early_order.push_back(id);
                    if watch.early_order.len() > MAX_EARLY_VERDICTS
                        && let Some(old) = watch.early_order.pop_front()
                    {
                        watch.early.remove(&old);
                    }
                }
            }
        }
        watch.uploads_at = uploads.version;
        watch.processing_at = processing.version;
        let mut out: Vec<PendingUpload> = watch.pending.values().cloned().collect();
        // Ids order as their text does: the full read's ORDER BY.
        out.sort_by_key(|p| (p.received_at, p.upload_id));
        Ok(out)
    }
}

/// The accepted video and frame-bundle uploads among `uploads` rows.
fn pending_rows(batch: &RecordBatch) -> Result<Vec<PendingUpload>> {
    let statuses = strings(batch, "status")?;
    let kinds = strings(batch, "kind")?;
    let wanted: Vec<usize> = (0..batch.num_rows())
        .filter(|&r| {
            statuses[r] == "accepted"
                && matches!(
                    UploadKind::parse(&kinds[r]),
                    Some(UploadKind::Video | UploadKind::Frames)
                )
        })
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let all = super::vision::pending_from_batch(batch)?;
    Ok(wanted.into_iter().map(|r| all[r].clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_data_is_read() {
        let commit = br#"{"commitInfo":{"operation":"WRITE"}}
{"add":{"path":"part-1.parquet","dataChange":true,"size":1}}
{"add":{"path":"day%3D2026-11-29/part-2.parquet","dataChange":true,"size":1}}
{"remove":{"path":"part-0.parquet","dataChange":false}}
{"add":{"path":"part-3.parquet","dataChange":false,"size":1}}
"#;
        assert_eq!(
            added_data_files(commit),
            vec!["part-1.parquet", "day%3D2026-11-29/part-2.parquet"]
        );
    }
}
