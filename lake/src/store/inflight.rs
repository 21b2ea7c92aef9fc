//! What makes a group commit repairable without an index of all history.
//! A group writes GNSS, then telemetry, then `uploads`; a crash in between
//! leaves rows whose upload is not listed, and the device's retry must not
//! write them again. Before its first commit a group notes its uploads in
//! `_hexroad/inflight/<group>.json`, and removes the note once `uploads` is
//! committed; at open only the uploads named by notes left behind are
//! looked up in `gnss` and `telemetry`, so opening costs what a crash left,
//! not what months of history hold.

use chrono::Utc;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use tracing::warn;

use super::Lake;
use crate::schema::TableName;
use crate::{Error, Result, UploadId};

/// Notes older than this are from uploads no device can still retry
/// (staging expires after days): they are removed at open.
const NOTE_LIFETIME: chrono::Duration = chrono::Duration::days(7);

fn note_path(group: uuid::Uuid) -> Path {
    Path::from(format!("_hexroad/inflight/{group}.json"))
}

impl Lake {
    /// Notes that a group is about to commit rows of `uploads`.
    pub(super) async fn note_inflight(&self, uploads: &[UploadId]) -> Result<uuid::Uuid> {
        let group = uuid::Uuid::new_v4();
        let ids: Vec<String> = uploads.iter().map(UploadId::to_string).collect();
        let body = serde_json::to_vec(&ids).map_err(|e| Error::Internal(e.to_string()))?;
        let path = note_path(group);
        self.blobs
            .put(&path, PutPayload::from(body))
            .await
            .map_err(Error::blob(&path))?;
        Ok(group)
    }

    /// The group's `uploads` commit landed: its note is no longer needed.
    pub(super) async fn clear_inflight(&self, group: uuid::Uuid) {
        let path = note_path(group);
        if let Err(e) = self.blobs.delete(&path).await {
            // Left behind, it only costs a lookup at the next open.
            warn!(note = %path, error = %e, "removing an in-flight note");
        }
    }

    /// The uploads that notes left behind name, and which of them already
    /// have rows in `gnss` and in `telemetry`. Old notes are removed.
    pub(super) async fn unfinished_rows(&self) -> Result<(Vec<UploadId>, Vec<UploadId>)> {
        let named = self.named_in_notes().await?;
        self.with_rows(&named).await
    }

    /// Of `uploads`, those other processes' notes name, with rows already
    /// in `gnss` and in `telemetry`: a writer on another node that died
    /// mid-group leaves its note, and the device's retry reaches this
    /// process, which has not opened since (notes are read at open).
    pub(super) async fn rows_cut_elsewhere(
        &self,
        uploads: &[UploadId],
    ) -> Result<(Vec<UploadId>, Vec<UploadId>)> {
        let named: Vec<UploadId> = self
            .named_in_notes()
            .await?
            .into_iter()
            .filter(|id| uploads.contains(id))
            .collect();
        self.with_rows(&named).await
    }

    /// Every upload the notes in `_hexroad/inflight/` name; notes older
    /// than their lifetime are removed.
    async fn named_in_notes(&self) -> Result<Vec<UploadId>> {
        let prefix = Path::from("_hexroad/inflight");
        let notes: Vec<_> = self
            .blobs
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(Error::blob(&prefix))?;
        let mut named = Vec::new();
        for note in notes {
            if Utc::now() - note.last_modified > NOTE_LIFETIME {
                let _ = self.blobs.delete(&note.location).await;
                continue;
            }
            let bytes = match self.blobs.get(&note.location).await {
                Ok(got) => got.bytes().await.map_err(Error::blob(&note.location))?,
                // Cleared by its writer since the listing.
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(Error::blob(&note.location)(e)),
            };
            // A note cut by a power cut names nothing reliable; its group
            // committed nothing either (the note is written first).
            if let Ok(ids) = serde_json::from_slice::<Vec<String>>(&bytes) {
                named.extend(ids.into_iter().filter_map(|s| s.parse::<UploadId>().ok()));
            }
        }
        Ok(named)
    }

    /// Which of `named` have rows in `gnss`, and which in `telemetry`.
    async fn with_rows(&self, named: &[UploadId]) -> Result<(Vec<UploadId>, Vec<UploadId>)> {
        if named.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let gnss = self.uploads_with_rows(TableName::Gnss, named).await?;
        let telemetry = self.uploads_with_rows(TableName::Telemetry, named).await?;
        Ok((gnss, telemetry))
    }
}
