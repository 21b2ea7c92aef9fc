//! Removing what nobody will finish: staged uploads past their
//! `Upload-Expires`, staging left by revoked devices, and raw objects whose
//! upload was never committed (a crash between storing the bytes and the
//! commit) or was committed as a copy of an earlier upload.
//!
//! Raw objects are found through `pending/<upload>` markers, written before
//! the bytes and removed after the commit, so a sweep costs what is in
//! flight, not what months of history hold.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use hexroad_lake::DeviceStatus;
use hexroad_lake::object_store::path::Path;
use hexroad_lake::object_store::{self, ObjectStoreExt, PutPayload};
use hexroad_wire::{DeviceId, UploadId};
use tracing::{info, warn};

use crate::app::Ingest;
use crate::tus::UploadInfo;

/// How old a pending marker must be before its raw object is judged: far
/// longer than storing an upload and committing it takes.
const PENDING_GRACE: chrono::Duration = chrono::Duration::hours(1);

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Unfinished uploads past their expiry.
    pub expired: usize,
    /// Unfinished uploads of revoked devices.
    pub revoked: usize,
    /// Raw objects no committed upload refers to.
    pub orphans: usize,
}

fn pending_path(id: UploadId) -> Path {
    Path::from(format!("pending/{id}"))
}

/// Notes that `key` is about to be written for upload `id`.
pub(crate) async fn mark_pending(
    store: &dyn object_store::ObjectStore,
    id: UploadId,
    key: &str,
) -> object_store::Result<()> {
    store
        .put(&pending_path(id), PutPayload::from(key.to_owned()))
        .await
        .map(|_| ())
}

/// The upload is committed and its raw object settled.
pub(crate) async fn clear_pending(
    store: &dyn object_store::ObjectStore,
    id: UploadId,
) -> object_store::Result<()> {
    match store.delete(&pending_path(id)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether a stored upload keeps its own raw object: only accepted ones do
/// (a rejected upload stored none, a duplicate is the first one's bytes).
pub(crate) fn keeps_raw(summary: &hexroad_lake::UploadSummary) -> bool {
    summary.status == hexroad_lake::UploadStatus::Accepted
}

impl Ingest {
    /// Removes expired and revoked staging and orphaned raw objects.
    pub async fn sweep(&self) -> object_store::Result<Swept> {
        let now = (self.clock)();
        let mut swept = Swept::default();
        for info in self.staging.infos().await? {
            let revoked = self
                .device(&info.device_id)
                .is_none_or(|d| d.status == DeviceStatus::Revoked);
            let expired = now >= self.expires_at(&info);
            if (revoked || expired) && self.discard(info.upload_id).await? {
                if revoked {
                    swept.revoked += 1;
                } else {
                    swept.expired += 1;
                }
            }
        }
        swept.orphans = self.sweep_pending(now).await?;
        if swept != Swept::default() {
            info!(?swept, "swept staging and raw objects");
        }
        Ok(swept)
    }

    /// When an unfinished upload is removed, unless finished first.
    pub(crate) fn expires_at(&self, info: &UploadInfo) -> DateTime<Utc> {
        let expiry =
            chrono::Duration::from_std(self.config.upload_expiry).unwrap_or(chrono::Duration::MAX);
        info.created_at
            .checked_add_signed(expiry)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Removes every unfinished upload of `device` (it was revoked).
    pub(crate) async fn discard_staging(&self, device: &DeviceId) -> object_store::Result<usize> {
        let mut removed = 0;
        for id in self.staging.open_uploads(device) {
            removed += usize::from(self.discard(id).await?);
        }
        Ok(removed)
    }

    /// Removes one unfinished upload, waiting for a request holding it.
    async fn discard(&self, id: UploadId) -> object_store::Result<bool> {
        let mut guard = self.staging.lock(id).await?;
        let Some(slot) = guard.as_ref() else {
            return Ok(false);
        };
        let info = slot.info.clone();
        self.staging.remove(&info).await?;
        *guard = None;
        Ok(true)
    }

    /// Judges the raw objects of uploads that began storing long enough
    /// ago: kept if the upload committed with that key, removed otherwise.
    async fn sweep_pending(&self, now: DateTime<Utc>) -> object_store::Result<usize> {
        let store = self.lake.blobs();
        let markers: Vec<_> = store
            .list(Some(&Path::from("pending")))
            .try_filter(|m| futures::future::ready(now - m.last_modified > PENDING_GRACE))
            .try_collect()
            .await?;
        let mut orphans = 0;
        for marker in markers {
            let Some(id) = marker
                .location
                .filename()
                .and_then(|f| f.parse::<UploadId>().ok())
            else {
                continue;
            };
            let key = match store.get(&marker.location).await {
                Ok(got) => String::from_utf8_lossy(&got.bytes().await?).into_owned(),
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let stored =
                self.lake
                    .upload_summary(id)
                    .await
                    .map_err(|e| object_store::Error::Generic {
                        store: "lake",
                        source: Box::new(e),
                    })?;
            let kept = stored.is_some_and(|s| keeps_raw(&s));
            if !kept {
                match store.delete(&Path::from(key.as_str())).await {
                    Ok(()) => orphans += 1,
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            clear_pending(store.as_ref(), id).await?;
        }
        Ok(orphans)
    }

    /// Sweeps every `sweep_interval` until `stop` resolves.
    pub async fn run_sweeper(self: Arc<Self>, stop: impl Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let interval: Duration = self.config.sweep_interval;
        loop {
            if let Err(e) = self.sweep().await {
                warn!(error = %hexroad_http::chain(&e), "sweeping staging");
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
