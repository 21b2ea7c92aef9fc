//! Bringing a table handle up to date at the cost of what changed. delta-rs
//! 1.1's `update_state` replays the log from the last checkpoint every time
//! (delta-rs issue 4276), even when nothing was committed since; asking
//! first whether the next commit exists (one GET) makes the common case,
//! one writer and many reads between its commits, cost O(1).

use deltalake::DeltaTable;

use super::Lake;
use crate::schema::TableName;
use crate::{Error, Result};

/// Brings `handle` to the table's latest version if anything was
/// committed after the version it holds. Returns the version it held.
pub(crate) async fn advance(handle: &mut DeltaTable, table: TableName) -> Result<Option<u64>> {
    let held = handle.version();
    if let Some(v) = held {
        let next = handle
            .log_store()
            .read_commit_entry(v + 1)
            .await
            .map_err(Error::delta(table))?;
        if next.is_none() {
            return Ok(held);
        }
    }
    handle.update_state().await.map_err(Error::delta(table))?;
    Ok(held)
}

impl Lake {
    /// `table` at its latest version: the process's shared handle is
    /// advanced in place (so the next caller starts from here) and a copy
    /// handed out.
    pub(crate) async fn latest(&self, table: TableName) -> Result<DeltaTable> {
        let mut guard = self.tables[table.index()].lock().await;
        advance(&mut guard, table).await?;
        Ok(guard.clone())
    }
}
