//! Commits that land at most once: each carries a Delta application
//! transaction, so whether it is in is read from the table's own log (not
//! from memory), across retries, restarts and nodes.

use deltalake::arrow::array::RecordBatch;
use deltalake::protocol::SaveMode;

use super::Lake;
use crate::schema::TableName;
use crate::{Error, Result, UploadId};

/// What [`Lake::commit_epoch_rows`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochRows {
    /// The rows are in, now.
    Written,
    /// They were already in, under the same settings: nothing added.
    AlreadyWritten,
    /// They were already in under other reward settings (their
    /// fingerprint); nothing added.
    OtherSettings { stored: i64 },
}

impl Lake {
    /// Appends the frame rows of one upload in one Delta commit, at most once.
    ///
    /// The commit carries a Delta application transaction (`app_id` =
    /// `vision/<upload>`): if a commit for this upload is already in the log,
    /// or another worker's lands concurrently, nothing is added and
    /// `Ok(false)` says so. This is what makes a retried or raced upload
    /// yield every frame exactly once.
    pub async fn commit_frames(&self, upload: UploadId, batch: RecordBatch) -> Result<bool> {
        let done = self
            .commit_once(TableName::Frames, &format!("vision/{upload}"), 1, batch)
            .await?;
        Ok(done.is_none())
    }

    /// Whether an upload's frames are committed (its `vision/<upload>`
    /// transaction is in the log): their images then belong to the table.
    pub async fn frames_committed(&self, upload: UploadId) -> Result<bool> {
        let delta_err = |source| Error::Delta {
            table: TableName::Frames.as_str(),
            source,
        };
        let current = self.latest(TableName::Frames).await?;
        Ok(current
            .snapshot()
            .map_err(delta_err)?
            .transaction_version(current.log_store().as_ref(), &format!("vision/{upload}"))
            .await
            .map_err(delta_err)?
            .is_some())
    }

    /// Appends an epoch's rows to `rewards` or `fraud_flags` at most once
    /// (application transaction `epoch/<id>`, its version the fingerprint
    /// of the reward settings): running an epoch again adds nothing, a run
    /// that crashed between the two tables completes, and a rerun under
    /// other settings is told so instead of paying the epoch a second way.
    pub async fn commit_epoch_rows(
        &self,
        table: TableName,
        epoch: &str,
        settings: i64,
        batch: RecordBatch,
    ) -> Result<EpochRows> {
        if !matches!(table, TableName::Rewards | TableName::FraudFlags) {
            return Err(Error::Internal(format!(
                "{} does not hold epoch rows",
                table.as_str()
            )));
        }
        let done = self
            .commit_once(table, &format!("epoch/{epoch}"), settings, batch)
            .await?;
        Ok(match done {
            None => EpochRows::Written,
            Some(stored) if stored == settings => EpochRows::AlreadyWritten,
            Some(stored) => EpochRows::OtherSettings { stored },
        })
    }

    /// One commit carrying the application transaction `app_id` at
    /// `version`, unless a commit with it is already in the log or lands
    /// concurrently: then `Some` of the version stored (`version` itself
    /// when a concurrent one won).
    pub(super) async fn commit_once(
        &self,
        table: TableName,
        app_id: &str,
        version: i64,
        batch: RecordBatch,
    ) -> Result<Option<i64>> {
        let delta_err = |source| Error::Delta {
            table: table.as_str(),
            source,
        };
        let app_id = app_id.to_owned();
        let mut guard = self.tables[table.index()].lock().await;
        self.advance(&mut guard, table).await?;
        let current = guard.clone();
        let done = current
            .snapshot()
            .map_err(delta_err)?
            .transaction_version(current.log_store().as_ref(), &app_id)
            .await
            .map_err(delta_err)?;
        if done.is_some() {
            *guard = current;
            return Ok(done);
        }
        let properties = super::group::quiet(vec![stamped(&app_id, version)]);
        match current
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(properties)
            .await
        {
            Ok(updated) => {
                *guard = updated;
                Ok(None)
            }
            Err(deltalake::DeltaTableError::Transaction {
                source:
                    deltalake::kernel::transaction::TransactionError::CommitConflict(
                        deltalake::kernel::transaction::CommitConflictError::ConcurrentTransaction,
                    ),
            }) => Ok(Some(version)),
            Err(source) => Err(delta_err(source)),
        }
    }
}

/// An application transaction stamped with when it was committed, so a
/// table's `delta.setTransactionRetentionDuration` can expire it from
/// checkpoints (an unstamped one is kept for ever, and every commit's
/// snapshot carries it).
fn stamped(app: impl ToString, version: i64) -> deltalake::kernel::Transaction {
    deltalake::kernel::Transaction::new_with_last_update(
        app,
        version,
        Some(chrono::Utc::now().timestamp_millis()),
    )
}
