//! Compaction that lays rows out for the map. Delta OPTIMIZE bin-packs a
//! table's small files in the order they came, so every compacted file of
//! `frames` or `gnss` holds drives from all over the map and a tile's
//! `lat`/`lon` filter can skip none of its row groups. These two tables are
//! compacted here instead: the small files are read, their rows sorted by H3
//! cell (the descendants of any cell form one contiguous range of indexes,
//! so a run of sorted rows covers a compact area), and written back in small
//! row groups whose statistics then let a spatial read skip the rest. As
//! OPTIMIZE does, only files under the target size are taken, in bins of
//! up to the target (a bin's rows are held in memory while sorted), each
//! rewrite is committed as an `OPTIMIZE` that changes no data, and appends
//! racing it still land.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::DeltaTable;
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::compute::{SortOptions, concat_batches, sort_to_indices, take_record_batch};
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Remove};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::DeltaOperation;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use tracing::debug;

use super::Lake;
use crate::schema::TableName;
use crate::{Error, Result};

/// The size compacted files grow towards, as OPTIMIZE's target.
pub(super) const TARGET_BYTES: u64 = 64 << 20;

/// Rows per row group in a sorted file: small enough that a z16 tile's
/// reads touch a few of them, large enough to compress well.
const ROW_GROUP_ROWS: usize = 16 * 1024;

/// Rows per data page: the page index lets a scan skip pages within a row
/// group, so a tile decodes (and decompresses) only the pages its cell
/// ranges reach, not its row groups' whole columns.
const PAGE_ROWS: usize = 1024;

/// Rows per row group in `uploads`: each carries a bloom filter per key
/// column sized for this many keys (128 KiB at the false-positive rate
/// below), which a point lookup reads whole.
const UPLOADS_ROW_GROUP_ROWS: usize = 64 * 1024;

/// The false-positive rate of `uploads`' bloom filters: a group commit's
/// lookup tests a few hundred hashes against each row group, and a false
/// positive costs a read of that row group's keys.
const UPLOADS_BLOOM_FPP: f64 = 0.001;

/// How `uploads` files are written, by a group commit, by compaction or
/// by a forgetting's rewrite: with bloom filters on `upload_id` and
/// `sha256`, what lets a lookup by either skip the row groups that do not
/// hold it (`reads/uploads.rs`) instead of reading the column. Each filter
/// is sized for a full row group and folded down to what its row group
/// holds, so a small group commit's file carries a small one.
///
/// Pages are small too: in a file sorted by hash, the page index then
/// leaves a lookup one page of a thousand rows to decode per key, not the
/// sixteen thousand a 1 MiB page holds.
pub(crate) fn uploads_properties() -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(deltalake::parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(UPLOADS_ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS);
    for key in ["upload_id", "sha256"] {
        let column = deltalake::parquet::schema::types::ColumnPath::from(key);
        builder = builder
            .set_column_bloom_filter_enabled(column.clone(), true)
            .set_column_bloom_filter_fpp(column.clone(), UPLOADS_BLOOM_FPP)
            .set_column_bloom_filter_max_ndv(column, UPLOADS_ROW_GROUP_ROWS as u64);
    }
    builder.build()
}

/// The column a table's compacted rows are sorted by: the cell for the
/// tables the map reads by area; the content hash for `uploads`, so the
/// row groups of a compacted file hold disjoint ranges of hashes and a
/// point lookup's min/max statistics rule out all but one of them before
/// any bloom filter is read.
pub(super) fn sort_column(table: TableName) -> Option<&'static str> {
    match table {
        TableName::Frames | TableName::Gnss => Some("cell"),
        TableName::Uploads => Some("sha256"),
        _ => None,
    }
}

/// A data file to rewrite: its path as the log names it, its size, and
/// where the table's store keeps it.
type SmallFile = (String, i64, deltalake::Path);

impl Lake {
    /// Rewrites `table`'s small files (under [`TARGET_BYTES`]) into files
    /// sorted by `column`, in bins of up to the target (newest files
    /// first), one commit per bin. Returns the table after the last commit
    /// and how many files were replaced.
    pub(super) async fn compact_sorted(
        &self,
        table: TableName,
        current: DeltaTable,
        column: &str,
    ) -> Result<(DeltaTable, u64)> {
        let mut files: Vec<SmallFile> = current
            .snapshot()
            .map_err(Error::delta(table))?
            .log_data()
            .iter()
            .filter(|f| (f.size() as u64) < TARGET_BYTES)
            .map(|f| (f.path().to_string(), f.size(), f.object_store_path()))
            .collect();
        // The log lists the newest last.
        files.reverse();
        let mut bins: Vec<Vec<SmallFile>> = Vec::new();
        let mut filled = TARGET_BYTES;
        for file in files {
            if filled >= TARGET_BYTES {
                bins.push(Vec::new());
                filled = 0;
            }
            filled += file.1 as u64;
            if let Some(bin) = bins.last_mut() {
                bin.push(file);
            }
        }
        let mut current = current;
        let mut removed = 0u64;
        for bin in bins.into_iter().filter(|b| b.len() > 1) {
            current = self.rewrite_sorted(table, current, column, &bin).await?;
            removed += bin.len() as u64;
        }
        Ok((current, removed))
    }

    /// Replaces `files` of `table` by their rows sorted by `column`, in one
    /// commit that changes no data.
    async fn rewrite_sorted(
        &self,
        table: TableName,
        current: DeltaTable,
        column: &str,
        files: &[SmallFile],
    ) -> Result<DeltaTable> {
        let snapshot = current.snapshot().map_err(Error::delta(table))?;
        let schema = Arc::new(
            deltalake::kernel::engine::arrow_conversion::TryIntoArrow::try_into_arrow(
                snapshot.schema().as_ref(),
            )
            .map_err(|e: deltalake::arrow::error::ArrowError| {
                Error::Internal(format!("schema of {}: {e}", table.as_str()))
            })?,
        );
        let store = current.object_store();
        let mut batches = Vec::new();
        for (_, _, location) in files {
            // Read as the table's schema: plain strings, whatever Arrow
            // types an earlier writer embedded.
            let read = crate::reads::changes::read_parquet_object(
                store.as_ref(),
                location,
                Some(Arc::clone(&schema)),
            );
            batches.extend(read.await?);
        }
        let sorted = sort_by(&concat_batches(&schema, &batches)?, column)?;
        drop(batches);
        let rows = sorted.num_rows();
        let properties = if table == TableName::Uploads {
            uploads_properties()
        } else {
            WriterProperties::builder()
                .set_compression(deltalake::parquet::basic::Compression::SNAPPY)
                .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                .set_data_page_row_count_limit(PAGE_ROWS)
                .set_write_batch_size(PAGE_ROWS)
                .build()
        };
        let mut writer = RecordBatchWriter::for_table(&current)
            .map_err(Error::delta(table))?
            .with_writer_properties(properties);
        writer.write(sorted).await.map_err(Error::delta(table))?;
        let adds = writer.flush().await.map_err(Error::delta(table))?;
        let now = chrono::Utc::now().timestamp_millis();
        let mut actions: Vec<Action> = adds
            .into_iter()
            .map(|mut add| {
                add.data_change = false;
                Action::Add(add)
            })
            .collect();
        actions.extend(files.iter().map(|(path, size, _)| {
            Action::Remove(Remove {
                path: path.clone(),
                deletion_timestamp: Some(now),
                data_change: false,
                extended_file_metadata: Some(true),
                partition_values: Some(HashMap::new()),
                size: Some(*size),
                deletion_vector: None,
                tags: None,
                base_row_id: None,
                default_row_commit_version: None,
            })
        }));
        let operation = DeltaOperation::Optimize {
            predicate: None,
            target_size: TARGET_BYTES as i64,
        };
        let committed = CommitBuilder::from(super::group::quiet(Vec::new()))
            .with_actions(actions)
            .build(Some(snapshot), current.log_store(), operation)
            .await
            .map_err(Error::delta(table))?;
        debug!(
            table = table.as_str(),
            removed = files.len(),
            rows,
            version = committed.version(),
            "compacted, sorted by {column}"
        );
        let mut after = current.clone();
        after.update_state().await.map_err(Error::delta(table))?;
        Ok(after)
    }
}

/// `batch` with its rows in ascending order of `column`.
fn sort_by(batch: &RecordBatch, column: &str) -> Result<RecordBatch> {
    let keys = batch
        .column_by_name(column)
        .ok_or_else(|| Error::Internal(format!("no column {column} to sort by")))?;
    let order = sort_to_indices(keys.as_ref(), Some(SortOptions::default()), None)?;
    Ok(take_record_batch(batch, &order)?)
}
