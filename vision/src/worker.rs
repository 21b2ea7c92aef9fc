//! The vision worker: claims pending uploads and turns each into frames once.
//!
//! Exactly once, even with several workers on one store and crashes midway:
//! - a claim is an object created only if absent ([`crate::claim`]);
//! - frame ids and image keys are derived from the upload and the frame's
//!   place in it, so a retry rewrites the same objects;
//! - all rows of an upload land in one Delta commit guarded by an application
//!   transaction ([`Lake::commit_frames`]); a second commit adds nothing;
//! - the `processing` row is written last.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use hexroad_lake::object_store::{ObjectStoreExt, path::Path as StorePath};
use hexroad_lake::{
    BoundingBox, FrameRecord, Lake, PendingUpload, ProcessingRecord, ProcessingStatus, TableName,
    schema,
};
use hexroad_wire::{UploadId, UploadKind};
use tracing::{error, info, warn};

use crate::claim::{Claimant, Claimed, claim};
use crate::dedupe::DedupeIndex;
use crate::job::Job;
use crate::sample::Track;
use crate::settings::VisionConfig;
use crate::{Anonymizer, Error, Result};

/// What one pass over the pending uploads did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub processed: u32,
    pub rejected: u32,
    pub failed: u32,
    pub skipped: u32,
}

pub struct Worker {
    lake: Arc<Lake>,
    config: VisionConfig,
    anonymizer: Option<Anonymizer>,
    load_error: Option<String>,
    claimant: Claimant,
    /// Uploads this worker failed: left for a later (fixed) worker.
    failed_here: HashSet<UploadId>,
    /// Where a video is copied from the store to be decoded.
    scratch: PathBuf,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.claimant.worker)
            .finish()
    }
}

impl Worker {
    /// Loads the models. A model that does not load does not stop the worker:
    /// it marks every upload it claims `failed` with the reason, and publishes
    /// nothing (fail closed).
    pub fn new(lake: Arc<Lake>, config: VisionConfig, scratch: PathBuf) -> Self {
        let (anonymizer, load_error) =
            match Anonymizer::load(&config.runtime, &config.detectors, config.mask) {
                Ok(a) => {
                    info!(models = %a.model_versions(), "vision models loaded");
                    (Some(a), None)
                }
                Err(e) => {
                    error!(error = %e, "vision models did not load: nothing will be published");
                    (None, Some(e.to_string()))
                }
            };
        Self {
            claimant: Claimant::here(config.lease),
            lake,
            config,
            anonymizer,
            load_error,
            failed_here: HashSet::new(),
            scratch,
        }
    }

    pub fn id(&self) -> &str {
        &self.claimant.worker
    }

    /// Why the models did not load, if they did not.
    pub fn load_error(&self) -> Option<&str> {
        self.load_error.as_deref()
    }

    /// Polls for pending uploads until `shutdown` resolves.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            match self.run_once(Utc::now()).await {
                Ok(pass) if pass.processed + pass.rejected + pass.failed > 0 => {
                    info!(?pass, "vision pass");
                }
                Ok(pass) if pass.skipped > 0 => tracing::debug!(?pass, "vision pass"),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "vision pass failed; retrying"),
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    /// Uploads with no `processing` verdict yet (failed ones are retried).
    pub async fn pending(&self) -> Result<Vec<PendingUpload>> {
        Ok(self.lake.pending_uploads().await?)
    }

    /// One pass: every pending upload this worker can claim is processed.
    pub async fn run_once(&mut self, now: DateTime<Utc>) -> Result<Pass> {
        let mut pass = Pass::default();
        for upload in self.pending().await? {
            if self.failed_here.contains(&upload.upload_id) {
                continue;
            }
            let track = self.track_of(&upload).await?;
            let mut track_refused = None;
            if track.is_empty() {
                track_refused = self.refused_track(&upload).await?;
                let waited = (now - upload.received_at).to_std().unwrap_or_default();
                if track_refused.is_none() && waited < self.config.track_wait {
                    pass.skipped += 1;
                    continue;
                }
            }
            let claimed = claim(
                &self.lake.blobs(),
                &self.claimant,
                upload.upload_id,
                now,
                self.config.max_attempts,
            )
            .await?;
            let verdict = match (claimed, track_refused) {
                (Claimed::Held, _) => {
                    pass.skipped += 1;
                    continue;
                }
                (Claimed::Exhausted { attempts }, _) => ProcessingRecord {
                    upload_id: upload.upload_id,
                    status: ProcessingStatus::Failed,
                    reason: Some(format!(
                        "gave_up: {attempts} attempts ended without a verdict \
                         (each worker died or stalled on this upload); not tried again"
                    )),
                    frames_published: 0,
                    frames_deduplicated: 0,
                    worker: self.claimant.worker.clone(),
                    at: now,
                },
                (Claimed::Taken { .. }, Some(reason)) => ProcessingRecord {
                    upload_id: upload.upload_id,
                    status: ProcessingStatus::Rejected,
                    reason: Some(format!(
                        "no_track: the drive's GNSS track was rejected: {reason}"
                    )),
                    frames_published: 0,
                    frames_deduplicated: 0,
                    worker: self.claimant.worker.clone(),
                    at: now,
                },
                (Claimed::Taken { .. }, None) => self.process(&upload, track, now).await,
            };
            match verdict.status {
                ProcessingStatus::Processed => pass.processed += 1,
                ProcessingStatus::Rejected => pass.rejected += 1,
                ProcessingStatus::Failed => {
                    pass.failed += 1;
                    self.failed_here.insert(upload.upload_id);
                }
            }
            let batch = schema::processing_batch(&verdict)?;
            self.lake.append_rows(TableName::Processing, batch).await?;
            if let Claimed::Taken { attempt } = claimed {
                crate::claim::finish(&self.lake.blobs(), upload.upload_id, attempt).await?;
            }
        }
        Ok(pass)
    }

    /// Why ingest refused this video's GNSS track, if it did: no track will come.
    async fn refused_track(&self, upload: &PendingUpload) -> Result<Option<String>> {
        match upload.drive_id.as_deref() {
            Some(drive) if upload.kind == UploadKind::Video => {
                Ok(self.lake.refused_track(&upload.device_id, drive).await?)
            }
            _ => Ok(None),
        }
    }

    /// A frame bundle's own track, or the GNSS uploads of a video's drive.
    async fn track_of(&self, upload: &PendingUpload) -> Result<Track> {
        let points = match (upload.kind, upload.drive_id.as_deref()) {
            (UploadKind::Frames, _) => self.lake.upload_track(upload.upload_id).await?,
            (_, Some(drive)) => self.lake.drive_track(&upload.device_id, drive).await?,
            (_, None) => Vec::new(),
        };
        Ok(Track::new(points))
    }

    async fn process(
        &mut self,
        upload: &PendingUpload,
        track: Track,
        now: DateTime<Utc>,
    ) -> ProcessingRecord {
        let worker = self.claimant.worker.clone();
        let verdict = |status, reason: Option<String>, published, deduped| ProcessingRecord {
            upload_id: upload.upload_id,
            status,
            reason,
            frames_published: published,
            frames_deduplicated: deduped,
            worker: worker.clone(),
            at: now,
        };
        let Some(anonymizer) = self.anonymizer.take() else {
            let reason = format!(
                "model not loaded: {}",
                self.load_error.as_deref().unwrap_or("unknown")
            );
            error!(upload_id = %upload.upload_id, %reason, "upload failed: nothing published");
            return verdict(ProcessingStatus::Failed, Some(reason), 0, 0);
        };
        if track.is_empty() {
            self.anonymizer = Some(anonymizer);
            return verdict(
                ProcessingStatus::Rejected,
                Some(format!(
                    "no_track: no accepted GNSS track for drive {:?} arrived within {}",
                    upload.drive_id.as_deref().unwrap_or(""),
                    humantime::format_duration(self.config.track_wait)
                )),
                0,
                0,
            );
        }
        let outcome = self.frames_of(upload, &track, anonymizer, now).await;
        match outcome {
            Ok(rows) => {
                let published = rows.iter().filter(|r| r.image_key.is_some()).count() as u64;
                let deduped = rows.len() as u64 - published;
                if rows.is_empty() {
                    return verdict(
                        ProcessingStatus::Rejected,
                        Some("no_frames: no frame falls on the GNSS track".into()),
                        0,
                        0,
                    );
                }
                let committed = match schema::frames_batch(&rows) {
                    Ok(batch) => self.lake.commit_frames(upload.upload_id, batch).await,
                    Err(e) => Err(e),
                };
                match committed {
                    Ok(first) => {
                        info!(upload_id = %upload.upload_id, published, deduped, first, "upload processed");
                        verdict(ProcessingStatus::Processed, None, published, deduped)
                    }
                    Err(e) => {
                        error!(upload_id = %upload.upload_id, error = %e, "frames not committed");
                        verdict(ProcessingStatus::Failed, Some(format!("commit: {e}")), 0, 0)
                    }
                }
            }
            Err(e) => {
                let status = match e {
                    Error::Video { .. } | Error::Input { .. } => ProcessingStatus::Rejected,
                    _ => ProcessingStatus::Failed,
                };
                error!(upload_id = %upload.upload_id, error = %e, status = status.as_str(), "upload not processed: nothing published");
                verdict(status, Some(e.to_string()), 0, 0)
            }
        }
    }

    /// Decodes, samples, dedupes, anonymizes and stores the frames of one
    /// upload; returns its rows (not yet committed).
    async fn frames_of(
        &mut self,
        upload: &PendingUpload,
        track: &Track,
        anonymizer: Anonymizer,
        now: DateTime<Utc>,
    ) -> Result<Vec<FrameRecord>> {
        let store = self.lake.blobs();
        let tmp = tempfile::Builder::new()
            .prefix("hexroad-vision-")
            .tempfile_in(&self.scratch)
            .map_err(|source| Error::Io {
                path: self.scratch.clone(),
                source,
            })?;
        let key = StorePath::from(upload.object_key.as_str());
        let mut stream = store.get(&key).await?.into_stream();
        {
            use std::io::Write;
            let mut file = tmp.as_file();
            while let Some(chunk) = stream.try_next().await? {
                file.write_all(&chunk).map_err(|source| Error::Io {
                    path: tmp.path().to_owned(),
                    source,
                })?;
            }
        }
        let index = self.dedupe_index(upload, track, now).await?;
        let start = upload
            .media
            .as_deref()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
            .and_then(|m| {
                m.get("recorded_at")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&Utc))
            // Muxers often stamp the encoding time instead of the recording
            // time: a start outside the track is not believed.
            .filter(|t| {
                track
                    .start()
                    .is_some_and(|s| *t >= s - chrono::Duration::seconds(5))
                    && track.end().is_some_and(|e| *t < e)
            })
            .or_else(|| track.start())
            .unwrap_or(now);
        let job = Job {
            path: tmp.path().to_owned(),
            is_video: upload.kind == UploadKind::Video,
            start,
            track: track.clone(),
            config: self.config.clone(),
            upload: upload.clone(),
            index,
            store: Arc::clone(&store),
            runtime: tokio::runtime::Handle::current(),
            now,
        };
        let (anonymizer, result) = tokio::task::spawn_blocking(move || {
            let mut anonymizer = anonymizer;
            let result = job.run(&mut anonymizer);
            (anonymizer, result)
        })
        .await
        .map_err(|e| Error::Internal(format!("vision task: {e}")))?;
        self.anonymizer = Some(anonymizer);
        drop(tmp);
        match result {
            Ok(rows) => Ok(rows),
            Err(failure) => {
                let (e, written) = *failure;
                // Nothing of a failed upload stays behind, even anonymized.
                for key in written {
                    let _ = store.delete(&key).await;
                }
                Err(e)
            }
        }
    }

    /// Published frames near the track from other uploads, by coarse cell.
    async fn dedupe_index(
        &self,
        upload: &PendingUpload,
        track: &Track,
        now: DateTime<Utc>,
    ) -> Result<DedupeIndex> {
        let (mut la0, mut la1, mut lo0, mut lo1) = (90f64, -90f64, 180f64, -180f64);
        for p in track.points() {
            la0 = la0.min(p.lat);
            la1 = la1.max(p.lat);
            lo0 = lo0.min(p.lon);
            lo1 = lo1.max(p.lon);
        }
        let margin = 0.002;
        let area = BoundingBox {
            south: la0 - margin,
            north: la1 + margin,
            west: lo0 - margin,
            east: lo1 + margin,
        };
        let since = now - chrono::Duration::days(self.config.dedupe_window_days);
        let mut index = DedupeIndex::new(self.config.dedupe_resolution);
        for frame in self
            .lake
            .published_hashes(area, since, upload.upload_id)
            .await?
        {
            index.insert(frame.cell, frame.frame_id, frame.phash);
        }
        Ok(index)
    }
}
