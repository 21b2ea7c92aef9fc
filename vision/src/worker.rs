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
use crate::withhold::Withheld;
use crate::{Anonymizer, Error, Result};

mod queued;
pub use queued::MAX_DELIVERIES;

/// What became of one pending upload this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A video whose GNSS track has not arrived yet, within the wait.
    Waiting,
    /// Another worker holds its claim.
    Held,
    /// This worker failed it before: left for another (fixed) worker.
    FailedHere,
    /// Its verdict is stored.
    Done(ProcessingStatus),
}

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
    /// The uploads waiting, followed from the commits since the last poll.
    watch: Option<hexroad_lake::PendingWatch>,
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
            watch: None,
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

    /// Uploads with no `processing` verdict yet (failed ones are retried):
    /// one full read at the first poll, then only what was committed since
    /// the last one.
    pub async fn pending(&mut self) -> Result<Vec<PendingUpload>> {
        if let Some(watch) = &mut self.watch {
            match self.lake.poll_pending(watch).await {
                Ok(pending) => return Ok(pending),
                Err(e) => {
                    warn!(error = %e, "following new uploads failed; reading them all again");
                    self.watch = None;
                }
            }
        }
        let mut watch = self.lake.watch_pending().await?;
        let pending = self.lake.poll_pending(&mut watch).await?;
        self.watch = Some(watch);
        Ok(pending)
    }

    /// One pass: every pending upload this worker can claim is processed.
    pub async fn run_once(&mut self, now: DateTime<Utc>) -> Result<Pass> {
        let mut pass = Pass::default();
        for upload in self.pending().await? {
            match self.step(&upload, now).await? {
                Step::Waiting | Step::Held | Step::FailedHere => pass.skipped += 1,
                Step::Done(ProcessingStatus::Processed) => pass.processed += 1,
                Step::Done(ProcessingStatus::Rejected) => pass.rejected += 1,
                Step::Done(ProcessingStatus::Failed) => pass.failed += 1,
            }
        }
        Ok(pass)
    }

    /// Claims one pending upload and records its verdict, unless its track
    /// has yet to come or another worker holds it.
    async fn step(&mut self, upload: &PendingUpload, now: DateTime<Utc>) -> Result<Step> {
        if self.failed_here.contains(&upload.upload_id) {
            return Ok(Step::FailedHere);
        }
        let track = self.track_of(upload).await?;
        let mut track_refused = None;
        if track.is_empty() {
            track_refused = self.refused_track(upload).await?;
            let waited = (now - upload.received_at).to_std().unwrap_or_default();
            if track_refused.is_none() && waited < self.config.track_wait {
                return Ok(Step::Waiting);
            }
        }
        let claimed = claim(
            &self.lake.blobs(),
            &self.claimant,
            upload.upload_id,
            crate::claim::claim_time(now),
            self.config.max_attempts,
        )
        .await?;
        let verdict = match (claimed, track_refused) {
            (Claimed::Held, _) => return Ok(Step::Held),
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
            (Claimed::Taken { attempt }, None) => {
                let _renewing = self.keep_renewed(upload.upload_id, attempt);
                self.process(upload, track, now).await
            }
        };
        if verdict.status == ProcessingStatus::Failed {
            self.failed_here.insert(upload.upload_id);
        }
        let batch = schema::processing_batch(&verdict)?;
        self.lake.append_rows(TableName::Processing, batch).await?;
        if let Claimed::Taken { attempt } = claimed {
            crate::claim::finish(&self.lake.blobs(), upload.upload_id, attempt).await?;
        }
        Ok(Step::Done(verdict.status))
    }

    /// Renews the claim every third of a lease until the returned guard is
    /// dropped, so an upload longer than a lease stays this worker's.
    fn keep_renewed(&self, upload: UploadId, attempt: u32) -> AbortOnDrop {
        let (store, who) = (self.lake.blobs(), self.claimant.clone());
        let every = (self.config.lease / 3).max(std::time::Duration::from_secs(1));
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = crate::claim::renew(&store, &who, upload, attempt, Utc::now()).await
                {
                    warn!(upload_id = %upload, error = %e, "renewing a claim");
                }
            }
        }))
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
                        // The whole chain: "table frames" alone says nothing.
                        let why = e.full_message();
                        error!(upload_id = %upload.upload_id, error = %why, "frames not committed");
                        verdict(
                            ProcessingStatus::Failed,
                            Some(format!("commit: {why}")),
                            0,
                            0,
                        )
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
        let withheld = self.withheld(upload, track).await?;
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
            withheld,
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
                discard_unowned(&self.lake, upload.upload_id, written).await;
                Err(e)
            }
        }
    }

    /// Where this upload's frames are never published: around the drive's
    /// first and last fix, and inside its contributor's privacy zones.
    async fn withheld(&self, upload: &PendingUpload, track: &Track) -> Result<Withheld> {
        let points = track.points();
        let ends = points
            .first()
            .into_iter()
            .chain(points.last())
            .map(|p| (p.lat, p.lon))
            .collect();
        let zones = self
            .lake
            .privacy_zones()
            .await?
            .into_iter()
            .filter(|z| z.active && z.contributor_id == upload.contributor_id)
            .collect();
        Ok(Withheld {
            ends,
            radius_m: self.config.privacy_radius_m,
            zones,
        })
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

/// Stops a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes the JPEGs a failed attempt wrote, so nothing of a failed upload
/// stays behind, unless another worker's commit for the same upload now
/// owns them (frame ids, and so keys, are the same in every attempt).
pub(crate) async fn discard_unowned(lake: &Lake, upload: UploadId, written: Vec<StorePath>) {
    match lake.frames_committed(upload).await {
        Ok(false) => {
            let store = lake.blobs();
            for key in written {
                let _ = store.delete(&key).await;
            }
        }
        Ok(true) => info!(%upload, "a racing worker committed this upload; its images stay"),
        Err(e) => {
            warn!(%upload, error = %e, "could not tell whether the images are committed; kept")
        }
    }
}

#[cfg(test)]
mod tests {
    use hexroad_lake::object_store::PutPayload;
    use hexroad_wire::{ContributorId, DeviceId, FrameId};

    use super::*;

    fn frame(upload: UploadId) -> FrameRecord {
        let frame_id = FrameId::from_bytes([3; 16]);
        FrameRecord {
            frame_id,
            upload_id: upload,
            device_id: DeviceId::from_public_key(&[1; 32]),
            contributor_id: "c".parse::<ContributorId>().unwrap(),
            ts: Utc::now(),
            lat: 60.17,
            lon: 24.94,
            heading: 0.0,
            speed: 5.0,
            cell: hexroad_wire::grid::cell_at(60.17, 24.94).unwrap().into(),
            image_key: Some(frame_id.image_key()),
            width: 16,
            height: 16,
            image_bytes: 5,
            faces_blurred: 0,
            plates_blurred: 0,
            phash: 0,
            quality: 1.0,
            sharpness: 1.0,
            dedupe_of: None,
            dedupe_reason: None,
            model_versions: "test".into(),
            processed_at: Utc::now(),
        }
    }

    /// Issue 15: a worker whose attempt failed deleted the JPEGs it wrote,
    /// even when a racing worker had committed the same upload (same frame
    /// ids, same keys): published frames lost their images. Committed
    /// images stay; uncommitted ones go.
    #[tokio::test]
    async fn a_failed_racer_does_not_delete_committed_images() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(&dir.path().to_string_lossy()).await.unwrap();
        let (won, lost) = (UploadId::new_random(), UploadId::new_random());
        let store = lake.blobs();
        let mut keys = Vec::new();
        for upload in [won, lost] {
            let key = StorePath::from(format!("frames/{upload}.jpg"));
            store
                .put(&key, PutPayload::from_static(b"jpeg"))
                .await
                .unwrap();
            keys.push(key);
        }
        let batch = schema::frames_batch(&[frame(won)]).unwrap();
        assert!(lake.commit_frames(won, batch).await.unwrap());
        discard_unowned(&lake, won, vec![keys[0].clone()]).await;
        discard_unowned(&lake, lost, vec![keys[1].clone()]).await;
        assert!(
            store.head(&keys[0]).await.is_ok(),
            "a committed image was deleted"
        );
        assert!(
            store.head(&keys[1]).await.is_err(),
            "an orphaned image was kept"
        );
    }
}
