//! The upload domain: what happens once the last byte of an upload is in.
//! Take the staged upload as one object, check the declared sha256, validate
//! it in place, keep it as the raw object and commit the upload's rows, in
//! that order, so that a crash at any point leaves either nothing or the
//! whole upload.

use chrono::Duration;
use hexroad_lake::object_store::ObjectStoreExt;
use hexroad_lake::object_store::path::Path as StorePath;
use hexroad_lake::{CommitOutcome, Lake, UploadRecord, UploadStatus, UploadSummary};
use tracing::{info, warn};

use crate::IngestConfig;
use crate::tus::{Slot, Staging, UploadInfo, Whole};
use crate::validate::{self, Accepted, Rejection, Rules};

/// Why a complete upload could not be finished (our fault, never the
/// device's: what the device got wrong is a [`Rejection`] stored with it).
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    #[error("creating a scratch file")]
    Scratch(#[source] std::io::Error),
    #[error("assembling the staged chunks")]
    Assemble(#[source] hexroad_lake::object_store::Error),
    #[error("the validation task failed")]
    Validation(#[source] tokio::task::JoinError),
    #[error("storing the raw object")]
    Raw(#[source] hexroad_lake::object_store::Error),
    #[error("committing the upload")]
    Commit(#[from] hexroad_lake::Error),
}

/// Everything `finish` reads besides the upload itself.
pub struct Finisher<'a> {
    pub lake: &'a Lake,
    pub staging: &'a Staging,
    pub config: &'a IngestConfig,
    /// Where an upload on a remote store is fetched to for validation.
    pub scratch: &'a std::path::Path,
    pub now: chrono::DateTime<chrono::Utc>,
}

impl Finisher<'_> {
    /// Checks, validates and commits a fully received upload. A device
    /// mistake (bad hash, corrupt video, GPS at 0,0) is a stored rejection;
    /// the summary says which.
    pub async fn finish(&self, slot: &Slot) -> Result<(UploadSummary, Counts), FinishError> {
        let info = &slot.info;
        let whole = self
            .staging
            .whole(slot)
            .await
            .map_err(FinishError::Assemble)?;
        let rules = Rules {
            now: self.now,
            skew: Duration::from_std(self.config.clock_skew).unwrap_or(Duration::MAX),
            max_speed_mps: self.config.max_speed_mps,
            media: self.config.media,
        };
        let outcome = if whole.sha256 != info.sha256 {
            Err(Rejection::new(
                "sha256_mismatch",
                format!(
                    "the bytes received hash to {}, not the declared {}",
                    whole.sha256, info.sha256
                ),
            ))
        } else {
            self.validate(&whole, info, rules).await?
        };
        let mut record = UploadRecord {
            upload_id: info.upload_id,
            device_id: info.device_id.clone(),
            contributor_id: info.contributor_id.clone(),
            kind: info.kind,
            format: info.format.clone(),
            drive_id: info.drive_id.clone(),
            bytes: info.length,
            sha256: info.sha256.clone(),
            object_key: String::new(),
            received_at: rules.now,
            status: UploadStatus::Accepted,
            reject_reason: None,
            duplicate_of: None,
            media: None,
        };
        let (gnss, telemetry) = match outcome {
            Ok(accepted) => {
                let key = format!("raw/{}/{}", info.device_id, info.upload_id);
                crate::sweep::mark_pending(self.lake.blobs().as_ref(), info.upload_id, &key)
                    .await
                    .map_err(FinishError::Raw)?;
                self.staging
                    .promote(&whole, &StorePath::from(key.as_str()))
                    .await
                    .map_err(FinishError::Raw)?;
                record.object_key = key;
                record.media = accepted.media.map(|m| m.to_string());
                (accepted.gnss, accepted.telemetry)
            }
            Err(rejection) => {
                info!(upload_id = %info.upload_id, code = rejection.code, reason = %rejection.message, "upload rejected");
                record.status = UploadStatus::Rejected;
                record.reject_reason = Some(rejection.stored());
                (Vec::new(), Vec::new())
            }
        };
        let key = record.object_key.clone();
        let summary = match self.lake.commit_upload(record, &gnss, &telemetry).await? {
            CommitOutcome::Committed(stored) => UploadSummary::from(&stored),
            CommitOutcome::AlreadyStored(existing) => existing,
        };
        if !key.is_empty() {
            self.settle_raw(&summary, info.upload_id, &key).await;
        }
        let counts = Counts {
            points: gnss.len(),
            samples: telemetry.len(),
        };
        Ok((summary, counts))
    }
}

impl Finisher<'_> {
    /// Validates the complete upload where it lies on a local folder; from
    /// another store it is first fetched into a scratch file.
    async fn validate(
        &self,
        whole: &Whole,
        info: &UploadInfo,
        rules: Rules,
    ) -> Result<Result<Accepted, Rejection>, FinishError> {
        let (path, scratch) = match self.lake.local_path(&whole.location) {
            Some(path) => (path, None),
            None => {
                let scratch = tempfile::Builder::new()
                    .prefix("hexroad-upload-")
                    .tempfile_in(self.scratch)
                    .map_err(FinishError::Scratch)?;
                self.staging
                    .download(&whole.location, scratch.path())
                    .await
                    .map_err(FinishError::Assemble)?;
                (scratch.path().to_owned(), Some(scratch))
            }
        };
        let (kind, format) = (info.kind, info.format.clone());
        let accepted = tokio::task::spawn_blocking(move || {
            validate::validate_file(&path, kind, &format, rules)
        })
        .await
        .map_err(FinishError::Validation)?;
        drop(scratch);
        Ok(accepted)
    }

    /// Keeps the raw object just stored only if this upload was committed
    /// as accepted; a copy of bytes stored before (same device: the same
    /// upload sent twice; another device: a duplicate) is removed. Failing
    /// that, the pending marker stays and the sweeper removes it later.
    async fn settle_raw(&self, summary: &UploadSummary, id: hexroad_wire::UploadId, key: &str) {
        let store = self.lake.blobs();
        let ours = summary.upload_id == id && crate::sweep::keeps_raw(summary);
        if !ours && let Err(e) = store.delete(&StorePath::from(key)).await {
            warn!(upload_id = %id, error = %e, "could not remove a raw copy; the sweeper will");
            return;
        }
        if let Err(e) = crate::sweep::clear_pending(store.as_ref(), id).await {
            warn!(upload_id = %id, error = %e, "could not clear a pending marker");
        }
    }
}

/// How many rows an upload added, for the log.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub points: usize,
    pub samples: usize,
}
