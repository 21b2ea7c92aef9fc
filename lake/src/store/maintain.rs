//! Table maintenance off the commit path. Commits made here skip delta-rs's
//! post-commit checkpoint (which lists the whole log and writes a full
//! checkpoint inside whichever request made the hundredth commit, while
//! every other upload waits); a background task compacts a table's small
//! files once it holds too many (every commit costs more with each file
//! the snapshot holds), checkpoints each table once enough commits have
//! landed since its last checkpoint, removes the log files older than the
//! retention, and vacuums the data files compaction replaced once they are
//! older than the retention too.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use deltalake::operations::vacuum::VacuumMode;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::Lake;
use crate::schema::TableName;
use crate::{Error, Result};

/// How a long-running process keeps the tables it writes (`[lake]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Maintenance {
    /// How often the tables are looked at.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub interval: Duration,
    /// A table is checkpointed once it is this many versions past its last.
    pub checkpoint_every: u64,
    /// A table holding more data files than this is compacted.
    pub compact_over_files: usize,
    /// How long replaced data files and old log entries are kept: a reward
    /// epoch reads the tables as they were when it closed, so it can be
    /// rerun, byte for byte, within this long of its close.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub retention: Duration,
    /// How often each table is vacuumed (replaced files past the retention
    /// deleted).
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub vacuum_every: Duration,
}

impl Default for Maintenance {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            checkpoint_every: 100,
            compact_over_files: 32,
            retention: Duration::from_secs(30 * 24 * 3600),
            vacuum_every: Duration::from_secs(3600),
        }
    }
}

impl Maintenance {
    /// Checks the section, naming the bad key.
    pub fn validate(&self) -> std::result::Result<(), hexroad_wire::settings::SettingError> {
        use hexroad_wire::settings::require;
        require(!self.interval.is_zero(), "interval", "must be positive")?;
        require(
            self.checkpoint_every > 0,
            "checkpoint_every",
            "must be at least 1",
        )?;
        require(
            self.compact_over_files > 1,
            "compact_over_files",
            "must be at least 2",
        )
    }

    /// The table properties `table` is created with: Delta's own cleanup
    /// then agrees with this policy whoever runs it.
    ///
    /// Application transactions are kept a day on the tables uploads
    /// write: ingest names its uploads in each commit's information, read
    /// from the commits since a writer's last look, and writes none (older
    /// versions wrote one per upload, which every checkpoint and snapshot
    /// carried). Vision's and epochs' transactions, which a retry finds in
    /// the snapshot, are kept as long as the rest.
    pub(crate) fn table_properties(&self, table: TableName) -> Vec<(String, Option<String>)> {
        let days = self.retention.as_secs().div_ceil(86_400).max(1);
        let retention = format!("interval {days} days");
        let transactions = match table {
            TableName::Uploads | TableName::Gnss | TableName::Telemetry => {
                "interval 1 days".to_owned()
            }
            _ => retention.clone(),
        };
        vec![
            (
                "delta.checkpointInterval".into(),
                Some(self.checkpoint_every.to_string()),
            ),
            ("delta.logRetentionDuration".into(), Some(retention.clone())),
            (
                "delta.deletedFileRetentionDuration".into(),
                Some(retention.clone()),
            ),
            (
                "delta.setTransactionRetentionDuration".into(),
                Some(transactions),
            ),
        ]
    }
}

/// Gives a table made before these properties existed the properties a
/// new one gets (one commit, once). Another process doing the same at the
/// same moment wins the race; the table is then read again.
pub(crate) async fn with_properties(
    table: deltalake::DeltaTable,
    name: TableName,
) -> Result<deltalake::DeltaTable> {
    let wanted = Maintenance::default().table_properties(name);
    let missing: std::collections::HashMap<String, String> = {
        let configuration = table
            .snapshot()
            .map_err(Error::delta(name))?
            .metadata()
            .configuration()
            .clone();
        wanted
            .into_iter()
            .filter(|(key, _)| !configuration.contains_key(key))
            .filter_map(|(key, value)| value.map(|v| (key, v)))
            .collect()
    };
    if missing.is_empty() {
        return Ok(table);
    }
    let mut fallback = table.clone();
    match table
        .set_tbl_properties()
        .with_properties(missing)
        .with_commit_properties(super::group::quiet(Vec::new()))
        .await
    {
        Ok(updated) => Ok(updated),
        Err(e) => {
            warn!(table = name.as_str(), error = %e, "setting table properties; read again");
            fallback.update_state().await.map_err(Error::delta(name))?;
            Ok(fallback)
        }
    }
}

/// What one maintenance pass did to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintained {
    pub table: TableName,
    /// Small files rewritten into fewer.
    pub compacted_files: u64,
    /// A checkpoint was written.
    pub checkpointed: bool,
    /// Log files removed (older than the retention and behind a checkpoint).
    pub removed_log_files: usize,
    /// Replaced data files deleted.
    pub vacuumed_files: usize,
}

impl Maintained {
    fn nothing(table: TableName) -> Self {
        Self {
            table,
            compacted_files: 0,
            checkpointed: false,
            removed_log_files: 0,
            vacuumed_files: 0,
        }
    }

    fn changed(&self) -> bool {
        *self != Self::nothing(self.table)
    }
}

/// The data files `current` is made of.
fn live_files(current: &deltalake::DeltaTable, table: TableName) -> Result<usize> {
    Ok(current
        .snapshot()
        .map_err(Error::delta(table))?
        .log_data()
        .num_files())
}

/// When this process last vacuumed each table.
pub(crate) type VacuumClock = std::sync::Mutex<[Option<Instant>; TableName::ALL.len()]>;

impl Lake {
    /// The data files `table`'s latest version is made of.
    pub async fn data_files(&self, table: TableName) -> Result<usize> {
        live_files(&self.latest(table).await?, table)
    }

    /// The URIs of the data files `table`'s latest version is made of: what
    /// another engine reading the table's Parquet directly must be given
    /// (the folder also holds files compaction replaced, until vacuum).
    pub async fn data_file_uris(&self, table: TableName) -> Result<Vec<String>> {
        let current = self.latest(table).await?;
        Ok(current
            .get_file_uris()
            .map_err(Error::delta(table))?
            .collect())
    }

    /// One pass over every table under `policy`: compacts a table holding
    /// more than `compact_over_files` files, checkpoints it once it is
    /// `checkpoint_every` versions past its last checkpoint (by version,
    /// whoever made them) and removes the log the retention lets go, and
    /// vacuums it when `vacuum_every` has passed. Returns what changed.
    pub async fn maintain(&self, policy: &Maintenance) -> Result<Vec<Maintained>> {
        let mut done = Vec::new();
        for table in TableName::ALL {
            let outcome = self.maintain_table(table, policy).await?;
            if outcome.changed() {
                done.push(outcome);
            }
        }
        Ok(done)
    }

    async fn maintain_table(&self, table: TableName, policy: &Maintenance) -> Result<Maintained> {
        let mut out = Maintained::nothing(table);
        let mut current = self.latest(table).await?;
        if live_files(&current, table)? > policy.compact_over_files {
            let (compacted, removed) = match super::compact::sort_column(table) {
                Some(column) => self.compact_sorted(table, current, column).await?,
                None => self.compact(table, current).await?,
            };
            current = compacted;
            out.compacted_files = removed;
        }
        let version = current.version().unwrap_or(0);
        let last = self.checkpointed[table.index()].load(Ordering::Relaxed);
        if version >= last + policy.checkpoint_every {
            deltalake::checkpoints::create_checkpoint(&current, None)
                .await
                .map_err(Error::delta(table))?;
            let cutoff = chrono::Utc::now()
                - chrono::Duration::from_std(policy.retention).unwrap_or(chrono::Duration::MAX);
            // This process's commits to the table wait for the cleanup and
            // go on from a handle read afresh: one holding commits just
            // removed fails on them.
            let mut guard = self.tables[table.index()].lock().await;
            out.removed_log_files = deltalake::checkpoints::cleanup_expired_logs_for(
                version,
                current.log_store().as_ref(),
                cutoff.timestamp_millis(),
                None,
            )
            .await
            .map_err(Error::delta(table))?;
            self.checkpointed[table.index()].store(version, Ordering::Relaxed);
            out.checkpointed = true;
            if out.removed_log_files > 0 {
                self.reload(&mut guard, table).await?;
                current = guard.clone();
            }
            drop(guard);
            debug!(table = table.as_str(), version, "checkpointed");
        }
        let due = {
            let clock = self.vacuumed.lock().unwrap_or_else(|e| e.into_inner());
            clock[table.index()].is_none_or(|at| at.elapsed() >= policy.vacuum_every)
        };
        if due {
            out.vacuumed_files = self.vacuum(table, current, policy.retention).await?;
            self.vacuumed.lock().unwrap_or_else(|e| e.into_inner())[table.index()] =
                Some(Instant::now());
        }
        Ok(out)
    }

    /// Rewrites a table's small files into few (Delta OPTIMIZE): a group
    /// commit, a query and a snapshot all cost more with every file the
    /// table holds. Appends racing it are not affected: it only removes the
    /// files it rewrote. Returns the table and the files it replaced.
    async fn compact(
        &self,
        table: TableName,
        current: deltalake::DeltaTable,
    ) -> Result<(deltalake::DeltaTable, u64)> {
        const TARGET_BYTES: std::num::NonZeroU64 =
            std::num::NonZeroU64::new(super::compact::TARGET_BYTES).unwrap();
        let (compacted, metrics) = current
            .optimize()
            .with_target_size(TARGET_BYTES)
            .with_commit_properties(super::group::quiet(Vec::new()))
            .await
            .map_err(Error::delta(table))?;
        debug!(
            table = table.as_str(),
            removed = metrics.num_files_removed,
            added = metrics.num_files_added,
            "compacted"
        );
        Ok((compacted, metrics.num_files_removed))
    }

    /// Deletes the data files removed from the table (by compaction, a
    /// delete) more than `retention` ago. Only files the log names as
    /// removed are touched (Delta's "lite" vacuum), never a file an append
    /// racing it has written but not yet committed.
    async fn vacuum(
        &self,
        table: TableName,
        current: deltalake::DeltaTable,
        retention: Duration,
    ) -> Result<usize> {
        let (_, metrics) = current
            .vacuum()
            .with_mode(VacuumMode::Lite)
            .with_retention_period(
                chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX),
            )
            .with_enforce_retention_duration(false)
            .with_commit_properties(super::group::quiet(Vec::new()))
            .await
            .map_err(Error::delta(table))?;
        let deleted = metrics.files_deleted.len();
        if deleted > 0 {
            info!(table = table.as_str(), deleted, "vacuumed");
        }
        Ok(deleted)
    }

    /// Runs [`Lake::maintain`] every `policy.interval` until `stop`
    /// completes: what every long-running process that writes (`serve`, a
    /// standalone vision worker) runs beside its work.
    pub async fn maintain_until(
        self: Arc<Self>,
        policy: Maintenance,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = tokio::time::sleep(policy.interval) => {}
                () = &mut stop => return,
            }
            if let Err(e) = self.maintain(&policy).await {
                warn!(error = %e.full_message(), "table maintenance");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::kernel::StructType;
    use deltalake::kernel::engine::arrow_conversion::TryFromArrow;

    /// A table made before the properties existed gets them once, and
    /// keeps its rows and its other settings.
    #[tokio::test]
    async fn an_older_table_gains_the_properties_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        let columns =
            StructType::try_from_arrow(crate::schema::stored_schema(TableName::Gnss).as_ref())
                .unwrap();
        let table = deltalake::DeltaTableBuilder::from_url(url)
            .unwrap()
            .build()
            .unwrap()
            .create()
            .with_columns(columns.fields().cloned())
            .await
            .unwrap();
        let before = table.version();
        let table = with_properties(table, TableName::Gnss).await.unwrap();
        let configuration = table.snapshot().unwrap().metadata().configuration().clone();
        assert_eq!(
            configuration
                .get("delta.setTransactionRetentionDuration")
                .map(String::as_str),
            Some("interval 1 days")
        );
        assert_eq!(
            configuration
                .get("delta.deletedFileRetentionDuration")
                .map(String::as_str),
            Some("interval 30 days")
        );
        assert_eq!(table.version(), before.map(|v| v + 1), "one commit");
        let again = with_properties(table, TableName::Gnss).await.unwrap();
        assert_eq!(again.version(), before.map(|v| v + 1), "and only once");
    }
}
