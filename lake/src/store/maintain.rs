//! Table maintenance off the commit path. Commits made here skip delta-rs's
//! post-commit checkpoint (which lists the whole log and writes a full
//! checkpoint inside whichever request made the hundredth commit, while
//! every other upload waits); a background task compacts a table's small
//! files once it holds too many (every commit costs more with each file
//! the snapshot holds), checkpoints each table once enough commits have
//! landed since its last checkpoint, and removes the log files the table's
//! retention lets go.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::Lake;

/// How often the tables are looked at by a running process.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(10);
/// A table is checkpointed once it is this many versions past its last.
pub const CHECKPOINT_EVERY: u64 = 100;
/// A table with more files than this is compacted at the next pass.
const COMPACT_OVER_FILES: usize = 32;
/// The size compaction aims each file at.
const COMPACT_TARGET_BYTES: std::num::NonZeroU64 = std::num::NonZeroU64::new(64 << 20).unwrap();
use crate::schema::TableName;
use crate::{Error, Result};

impl Lake {
    /// Counts a commit made by this process (for the next maintenance pass).
    pub(crate) fn note_commit(&self, table: TableName) {
        self.commits[table.index()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Compacts every table holding more than a few dozen files, then
    /// checkpoints every table with at least `every` commits since its last
    /// checkpoint (by version, whoever made them) and cleans its expired
    /// log. Returns the tables checkpointed.
    pub async fn maintain(&self, every: u64) -> Result<Vec<TableName>> {
        let mut done = Vec::new();
        for table in TableName::ALL {
            let delta_err = |source| Error::Delta {
                table: table.as_str(),
                source,
            };
            let mut current = self.tables[table.index()].lock().await.clone();
            current.update_state().await.map_err(delta_err)?;
            let files = current
                .snapshot()
                .map_err(delta_err)?
                .log_data()
                .num_files();
            if files > COMPACT_OVER_FILES {
                current = self.compact(table, current).await?;
            }
            let version = current.version().unwrap_or(0);
            let last = self.checkpointed[table.index()].load(std::sync::atomic::Ordering::Relaxed);
            if version < last + every {
                continue;
            }
            deltalake::checkpoints::create_checkpoint(&current, None)
                .await
                .map_err(delta_err)?;
            let removed = deltalake::checkpoints::cleanup_metadata(&current, None)
                .await
                .map_err(delta_err)?;
            self.checkpointed[table.index()].store(version, std::sync::atomic::Ordering::Relaxed);
            self.commits[table.index()].store(0, std::sync::atomic::Ordering::Relaxed);
            debug!(table = table.as_str(), version, removed, "checkpointed");
            done.push(table);
        }
        Ok(done)
    }

    /// Rewrites a table's small files into few (Delta OPTIMIZE): a group
    /// commit, a query and a snapshot all cost more with every file the
    /// table holds. Appends racing it are not affected: it only removes the
    /// files it rewrote.
    async fn compact(
        &self,
        table: TableName,
        current: deltalake::DeltaTable,
    ) -> Result<deltalake::DeltaTable> {
        let delta_err = |source| Error::Delta {
            table: table.as_str(),
            source,
        };
        let (compacted, metrics) = current
            .optimize()
            .with_target_size(COMPACT_TARGET_BYTES)
            .with_commit_properties(super::group::quiet(Vec::new()))
            .await
            .map_err(delta_err)?;
        debug!(
            table = table.as_str(),
            removed = metrics.num_files_removed,
            added = metrics.num_files_added,
            "compacted"
        );
        Ok(compacted)
    }

    /// Runs [`Lake::maintain`] every [`MAINTENANCE_INTERVAL`], checkpointing
    /// each [`CHECKPOINT_EVERY`] versions, until `stop` completes: what every
    /// long-running process that writes (`serve`, a standalone vision
    /// worker) runs beside its work.
    pub async fn maintain_until(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = tokio::time::sleep(MAINTENANCE_INTERVAL) => {}
                () = &mut stop => return,
            }
            if let Err(e) = self.maintain(CHECKPOINT_EVERY).await {
                warn!(error = %e.full_message(), "table maintenance");
            }
        }
    }
}
