//! Bringing a table handle up to date at the cost of what changed. delta-rs
//! 1.1's `update_state` replays the log from the last checkpoint every time
//! (delta-rs issue 4276), even when nothing was committed since; asking
//! first whether the next commit exists (one HEAD) makes the common case,
//! one writer and many reads between its commits, cost O(1).
//!
//! A handle reads its commit files lazily, on every scan, from the log
//! segment it was loaded with: the commits after some checkpoint. Log
//! cleanup removes the commits before a newer checkpoint once they are
//! older than the retention, and a handle still holding them then fails
//! every scan, update and commit with `File not found:
//! _delta_log/<version>.json`, for good (the vision worker's frames
//! commits did, in the stress test with a short retention). So a handle is
//! read afresh from the newest checkpoint when one appears past the one it
//! was read from (looked for at most every [`CHECKPOINT_LOOK`]), when the
//! maintenance in this process has just cleaned the log, and when
//! following the log fails.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use object_store::ObjectStoreExt;
use tracing::{debug, warn};

use super::Lake;
use crate::schema::TableName;
use crate::{Error, Result};

/// How often a handle with no new commit looks for a newer checkpoint
/// (one small GET): how long another process's log cleanup can leave this
/// one reading commits it removed.
pub const CHECKPOINT_LOOK: Duration = Duration::from_secs(1);

/// Where one table's handle reads its log from.
#[derive(Debug, Default)]
pub(crate) struct Segment {
    /// The checkpoint the handle was last read afresh from (0: none).
    from_checkpoint: u64,
    /// When `_last_checkpoint` was last read for it.
    looked: Option<Instant>,
}

/// One [`Segment`] per table.
pub(crate) type Segments = [Mutex<Segment>; TableName::ALL.len()];

impl Lake {
    /// `table` at its latest version: the process's shared handle is
    /// advanced in place (so the next caller starts from here) and a copy
    /// handed out.
    pub(crate) async fn latest(&self, table: TableName) -> Result<DeltaTable> {
        let mut guard = self.tables[table.index()].lock().await;
        self.advance(&mut guard, table).await?;
        Ok(guard.clone())
    }

    /// Brings `handle`, the shared handle of `table` (its lock held), to the
    /// table's latest version if anything was committed after the version
    /// it holds, or afresh from a newer checkpoint. Returns the version it
    /// held.
    pub(crate) async fn advance(
        &self,
        handle: &mut DeltaTable,
        table: TableName,
    ) -> Result<Option<u64>> {
        let held = handle.version();
        if let Some(v) = held
            && !commit_exists(handle, v + 1, table).await?
        {
            if self.checkpoint_look_due(table)
                && let Some(newest) = last_checkpoint(handle, table).await?
                && newest > self.segment(table).from_checkpoint
            {
                debug!(
                    table = table.as_str(),
                    checkpoint = newest,
                    "a newer checkpoint: reading the table afresh"
                );
                self.reload(handle, table).await?;
            }
            return Ok(held);
        }
        if let Err(e) = handle.update_state().await {
            warn!(table = table.as_str(), error = %e, "could not follow the log; reading the table afresh");
            self.reload(handle, table).await?;
        }
        Ok(held)
    }

    /// Reads `table` afresh from its newest checkpoint and the commits after
    /// it, into `handle` (the shared handle, its lock held).
    pub(crate) async fn reload(&self, handle: &mut DeltaTable, table: TableName) -> Result<()> {
        let newest = last_checkpoint(handle, table).await?.unwrap_or(0);
        let mut fresh = DeltaTable::new(handle.log_store());
        load_racing_cleanup(&mut fresh)
            .await
            .map_err(Error::delta(table))?;
        *handle = fresh;
        let mut segment = self.segment(table);
        segment.from_checkpoint = newest;
        segment.looked = Some(Instant::now());
        Ok(())
    }

    fn segment(&self, table: TableName) -> std::sync::MutexGuard<'_, Segment> {
        self.segments[table.index()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `_last_checkpoint` is due a look for `table` (and notes the look).
    fn checkpoint_look_due(&self, table: TableName) -> bool {
        let mut segment = self.segment(table);
        let due = segment
            .looked
            .is_none_or(|at| at.elapsed() >= CHECKPOINT_LOOK);
        if due {
            segment.looked = Some(Instant::now());
        }
        due
    }
}

/// Loads `table` from its newest checkpoint, again if a log cleanup removed
/// commits between listing the log and reading them (another process
/// checkpointed meanwhile: the next listing starts at its checkpoint).
pub(crate) async fn load_racing_cleanup(table: &mut DeltaTable) -> deltalake::DeltaResult<()> {
    const ATTEMPTS: usize = 3;
    let mut attempt = 1;
    loop {
        match table.load().await {
            Err(e)
                if attempt < ATTEMPTS && !matches!(e, deltalake::DeltaTableError::NotATable(_)) =>
            {
                debug!(error = %e, attempt, "loading a table raced a log cleanup; again");
                *table = DeltaTable::new(table.log_store());
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// Whether `_delta_log/<version>.json` exists.
async fn commit_exists(handle: &DeltaTable, version: u64, table: TableName) -> Result<bool> {
    let path = object_store::path::Path::from(format!("_delta_log/{version:020}.json"));
    match handle.object_store().head(&path).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(source) => Err(Error::Blob {
            key: format!("tables/{}/{path}", table.as_str()),
            source,
        }),
    }
}

/// The version of the table's newest checkpoint, from `_last_checkpoint`.
async fn last_checkpoint(handle: &DeltaTable, table: TableName) -> Result<Option<u64>> {
    let path = object_store::path::Path::from("_delta_log/_last_checkpoint");
    let bytes = match handle.object_store().get(&path).await {
        Ok(got) => got.bytes().await,
        Err(e) => Err(e),
    };
    match bytes {
        Ok(bytes) => Ok(serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["version"].as_u64())),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(source) => Err(Error::Blob {
            key: format!("tables/{}/{path}", table.as_str()),
            source,
        }),
    }
}
