//! The vision worker: claims pending uploads and turns each into frames once.
//!
//! Exactly once, even with several workers on one store and crashes midway:
//! - a claim is an object created only if absent (`claims/vision/<upload>/<n>`);
//!   it lapses when its lease ends, or at once when its holder on this host
//!   has died, and the next attempt takes number n + 1;
//! - frame ids and image keys are derived from the upload and the frame's
//!   place in it, so a retry rewrites the same objects;
//! - all rows of an upload land in one Delta commit guarded by an application
//!   transaction ([`Lake::commit_frames`]); a second commit adds nothing;
//! - the `processing` row is written last.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use hexroad_lake::arrow::array::{Array, AsArray};
use hexroad_lake::arrow::datatypes::{Float64Type, TimestampMicrosecondType};
use hexroad_lake::grid::haversine_m;
use hexroad_lake::object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutPayload, path::Path as StorePath,
};
use hexroad_lake::{
    ContributorId, DeviceId, FrameRecord, GnssPoint, Lake, ProcessingRecord, ProcessingStatus,
    TableName, UploadId, schema,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use crate::image_ops;
use crate::sample::{Pose, Sampler, Track, angle_between};
use crate::video::{self, Flow};
use crate::{Anonymizer, DetectorConfig, Error, MaskConfig, Result};

/// Settings of the vision stage (`[vision]` in the settings file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisionConfig {
    /// Run the worker inside `hexroad serve`.
    pub enabled: bool,
    /// `libonnxruntime.so` from the set-up.
    pub runtime: PathBuf,
    pub detectors: Vec<DetectorConfig>,
    pub mask: MaskConfig,
    /// Keep one frame per this many metres travelled.
    pub sample_distance_m: f64,
    /// A frame this close to the last kept one, facing the same way, adds nothing.
    pub still_distance_m: f64,
    pub still_angle_deg: f64,
    /// Perceptual-hash bits two frames may differ by and still be duplicates.
    pub phash_max_bits: u32,
    /// H3 resolution of the neighbourhood searched for near-duplicates.
    pub dedupe_resolution: u8,
    /// How far back near-duplicates are searched.
    pub dedupe_window_days: i64,
    pub jpeg_quality: u8,
    /// How long a claim holds an upload against other workers.
    #[serde(with = "hexroad_lake::duration_text")]
    pub lease: Duration,
    /// How long a video waits for its GNSS track before it is rejected.
    #[serde(with = "hexroad_lake::duration_text")]
    pub track_wait: Duration,
    #[serde(with = "hexroad_lake::duration_text")]
    pub poll_interval: Duration,
    /// Longest gap between fixes across which a position is interpolated.
    pub max_track_gap_s: f64,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            runtime: PathBuf::from("datasets/libonnxruntime.so"),
            detectors: vec![
                DetectorConfig::centerface("datasets/centerface.onnx"),
                DetectorConfig::plates("datasets/plates.onnx"),
            ],
            mask: MaskConfig::default(),
            sample_distance_m: 3.0,
            still_distance_m: 2.0,
            still_angle_deg: 20.0,
            phash_max_bits: 8,
            dedupe_resolution: 11,
            dedupe_window_days: 30,
            jpeg_quality: 85,
            lease: Duration::from_secs(600),
            track_wait: Duration::from_secs(600),
            poll_interval: Duration::from_secs(2),
            max_track_gap_s: 5.0,
        }
    }
}

impl VisionConfig {
    /// Checks values a typo could make absurd; names the bad key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.sample_distance_m.is_nan() || self.sample_distance_m <= 0.0 {
            return Err("vision.sample_distance_m must be > 0".into());
        }
        if self.dedupe_resolution > 15 {
            return Err("vision.dedupe_resolution must be 0–15".into());
        }
        if self.phash_max_bits > 32 {
            return Err("vision.phash_max_bits must be ≤ 32".into());
        }
        if self.jpeg_quality == 0 || self.jpeg_quality > 100 {
            return Err("vision.jpeg_quality must be 1–100".into());
        }
        Ok(())
    }
}

/// An upload waiting for the vision stage.
#[derive(Debug, Clone)]
pub struct PendingUpload {
    pub upload_id: UploadId,
    pub device_id: DeviceId,
    pub contributor_id: ContributorId,
    pub kind: String,
    pub drive_id: Option<String>,
    pub object_key: String,
    pub received_at: DateTime<Utc>,
    pub media: Option<String>,
}

/// What one pass over the pending uploads did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    pub processed: u32,
    pub rejected: u32,
    pub failed: u32,
    pub skipped: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claim {
    worker: String,
    host: String,
    pid: u32,
    expires_at: DateTime<Utc>,
}

pub struct Worker {
    lake: Arc<Lake>,
    config: VisionConfig,
    anonymizer: Option<Anonymizer>,
    load_error: Option<String>,
    id: String,
    host: String,
    /// Uploads this worker failed: left for a later (fixed) worker.
    failed_here: HashSet<UploadId>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("id", &self.id).finish()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

impl Worker {
    /// Loads the models. A model that does not load does not stop the worker:
    /// it marks every upload it claims `failed` with the reason, and publishes
    /// nothing (fail closed).
    pub fn new(lake: Arc<Lake>, config: VisionConfig) -> Self {
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
        let host = hostname();
        Self {
            id: format!("{host}:{}", std::process::id()),
            host,
            lake,
            config,
            anonymizer,
            load_error,
            failed_here: HashSet::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
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
        let batches = self
            .lake
            .query(
                "SELECT upload_id, device_id, contributor_id, kind, drive_id, object_key, \
                 received_at, media FROM uploads \
                 WHERE status = 'accepted' AND kind IN ('video', 'frames') \
                 AND upload_id NOT IN (SELECT upload_id FROM processing \
                                       WHERE status IN ('processed', 'rejected')) \
                 ORDER BY received_at, upload_id",
            )
            .await?
            .batches;
        let mut out = Vec::new();
        for b in &batches {
            let s = |i: usize| b.column(i).as_string::<i32>();
            let received = b.column(6).as_primitive::<TimestampMicrosecondType>();
            for r in 0..b.num_rows() {
                let parse = |v: &str, what: &str| {
                    Error::Internal(format!("stored {what} {v:?} is malformed"))
                };
                out.push(PendingUpload {
                    upload_id: s(0)
                        .value(r)
                        .parse()
                        .map_err(|_| parse(s(0).value(r), "upload id"))?,
                    device_id: s(1)
                        .value(r)
                        .parse()
                        .map_err(|_| parse(s(1).value(r), "device id"))?,
                    contributor_id: s(2)
                        .value(r)
                        .parse()
                        .map_err(|_| parse(s(2).value(r), "contributor id"))?,
                    kind: s(3).value(r).to_owned(),
                    drive_id: (!s(4).is_null(r)).then(|| s(4).value(r).to_owned()),
                    object_key: s(5).value(r).to_owned(),
                    received_at: DateTime::from_timestamp_micros(received.value(r))
                        .unwrap_or_default(),
                    media: (!s(7).is_null(r)).then(|| s(7).value(r).to_owned()),
                });
            }
        }
        Ok(out)
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
            if !self.claim(upload.upload_id, now).await? {
                pass.skipped += 1;
                continue;
            }
            let verdict = match track_refused {
                Some(reason) => ProcessingRecord {
                    upload_id: upload.upload_id,
                    status: ProcessingStatus::Rejected,
                    reason: Some(format!(
                        "no_track: the drive's GNSS track was rejected: {reason}"
                    )),
                    frames_published: 0,
                    frames_deduplicated: 0,
                    worker: self.id.clone(),
                    at: Utc::now(),
                },
                None => self.process(&upload, track, now).await,
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
        }
        Ok(pass)
    }

    /// Why ingest refused this video's GNSS track, if it did: no track will come.
    async fn refused_track(&self, upload: &PendingUpload) -> Result<Option<String>> {
        let Some(drive) = upload
            .drive_id
            .as_deref()
            .filter(|_| upload.kind == "video")
        else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT reject_reason FROM uploads WHERE kind = 'gnss' AND status = 'rejected' \
             AND device_id = '{}' AND drive_id = '{}' LIMIT 1",
            upload.device_id.as_str().replace('\'', "''"),
            drive.replace('\'', "''")
        );
        let batches = self.lake.query(&sql).await?.batches;
        Ok(batches.iter().find(|b| b.num_rows() > 0).map(|b| {
            let reasons = b.column(0).as_string::<i32>();
            if reasons.is_null(0) {
                "rejected".to_owned()
            } else {
                reasons.value(0).to_owned()
            }
        }))
    }

    async fn track_of(&self, upload: &PendingUpload) -> Result<Track> {
        let quote = |s: &str| s.replace('\'', "''");
        let filter = if upload.kind == "frames" {
            format!("g.upload_id = '{}'", upload.upload_id)
        } else {
            let Some(drive) = &upload.drive_id else {
                return Ok(Track::new(Vec::new()));
            };
            format!(
                "u.device_id = '{}' AND u.drive_id = '{}' AND u.kind = 'gnss'",
                quote(upload.device_id.as_str()),
                quote(drive)
            )
        };
        let sql = format!(
            "SELECT g.ts, g.lat, g.lon, g.speed, g.heading FROM gnss g \
             JOIN uploads u ON g.upload_id = u.upload_id \
             WHERE u.status = 'accepted' AND {filter}"
        );
        let batches = self.lake.query(&sql).await?.batches;
        let mut points = Vec::new();
        for b in &batches {
            let ts = b.column(0).as_primitive::<TimestampMicrosecondType>();
            let f = |i: usize| b.column(i).as_primitive::<Float64Type>();
            for r in 0..b.num_rows() {
                let opt = |i: usize| (!f(i).is_null(r)).then(|| f(i).value(r));
                points.push(GnssPoint {
                    ts: DateTime::from_timestamp_micros(ts.value(r)).unwrap_or_default(),
                    lat: f(1).value(r),
                    lon: f(2).value(r),
                    alt: None,
                    speed: opt(3),
                    heading: opt(4),
                    hdop: None,
                });
            }
        }
        Ok(Track::new(points))
    }

    /// Takes the upload if no live claim holds it.
    async fn claim(&self, upload: UploadId, now: DateTime<Utc>) -> Result<bool> {
        let store = self.lake.blobs();
        let prefix = StorePath::from(format!("claims/vision/{upload}"));
        let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
        let mut latest: Option<(u32, StorePath)> = None;
        for meta in listed {
            let n = meta
                .location
                .filename()
                .and_then(|f| f.strip_suffix(".json"))
                .and_then(|f| f.parse::<u32>().ok());
            if let Some(n) = n
                && latest.as_ref().is_none_or(|(m, _)| n > *m)
            {
                latest = Some((n, meta.location));
            }
        }
        let next = match latest {
            None => 0,
            Some((n, location)) => {
                let bytes = store.get(&location).await?.bytes().await?;
                if let Ok(claim) = serde_json::from_slice::<Claim>(&bytes) {
                    let holder_died = claim.host == self.host
                        && claim.pid != std::process::id()
                        && !process_alive(claim.pid);
                    if claim.expires_at > now && !holder_died {
                        return Ok(false);
                    }
                    info!(%upload, previous = %claim.worker, "taking over a lapsed claim");
                }
                n + 1
            }
        };
        let claim = Claim {
            worker: self.id.clone(),
            host: self.host.clone(),
            pid: std::process::id(),
            expires_at: now
                + chrono::Duration::from_std(self.config.lease)
                    .unwrap_or(chrono::Duration::minutes(10)),
        };
        let body = serde_json::to_vec(&claim).map_err(|e| Error::Internal(e.to_string()))?;
        let key = prefix.clone().join(format!("{next:06}.json"));
        match store
            .put_opts(&key, PutPayload::from(body), PutMode::Create.into())
            .await
        {
            Ok(_) => Ok(true),
            Err(hexroad_lake::object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn process(
        &mut self,
        upload: &PendingUpload,
        track: Track,
        now: DateTime<Utc>,
    ) -> ProcessingRecord {
        let worker = self.id.clone();
        let verdict = |status, reason: Option<String>, published, deduped| ProcessingRecord {
            upload_id: upload.upload_id,
            status,
            reason,
            frames_published: published,
            frames_deduplicated: deduped,
            worker: worker.clone(),
            at: Utc::now(),
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
            .tempfile()
            .map_err(|source| Error::Io {
                path: std::env::temp_dir(),
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
            is_video: upload.kind == "video",
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
        let since = now - chrono::Duration::days(self.config.dedupe_window_days);
        let sql = format!(
            "SELECT frame_id, cell, phash FROM frames WHERE image_key IS NOT NULL \
             AND upload_id <> '{}' AND ts >= to_timestamp_micros({}) \
             AND lat BETWEEN {} AND {} AND lon BETWEEN {} AND {}",
            upload.upload_id,
            since.timestamp_micros(),
            la0 - margin,
            la1 + margin,
            lo0 - margin,
            lo1 + margin
        );
        let batches = self.lake.query(&sql).await?.batches;
        let mut index = DedupeIndex::new(self.config.dedupe_resolution);
        for b in &batches {
            let ids = b.column(0).as_string::<i32>();
            let cells = b
                .column(1)
                .as_primitive::<hexroad_lake::arrow::datatypes::UInt64Type>();
            let hashes = b.column(2).as_string::<i32>();
            for r in 0..b.num_rows() {
                if let (Ok(cell), Ok(hash)) = (
                    h3o::CellIndex::try_from(cells.value(r)),
                    u64::from_str_radix(hashes.value(r), 16),
                ) {
                    index.insert(cell, ids.value(r).to_owned(), hash);
                }
            }
        }
        Ok(index)
    }
}

/// Near-duplicate lookup: perceptual hashes of published frames by H3 cell.
#[derive(Debug, Clone)]
struct DedupeIndex {
    resolution: h3o::Resolution,
    by_cell: HashMap<h3o::CellIndex, Vec<(String, u64)>>,
}

impl DedupeIndex {
    fn new(resolution: u8) -> Self {
        Self {
            resolution: h3o::Resolution::try_from(resolution).unwrap_or(h3o::Resolution::Eleven),
            by_cell: HashMap::new(),
        }
    }

    fn insert(&mut self, cell: h3o::CellIndex, frame_id: String, phash: u64) {
        if let Some(parent) = cell.parent(self.resolution) {
            self.by_cell
                .entry(parent)
                .or_default()
                .push((frame_id, phash));
        }
    }

    /// The closest published frame within `max_bits` in this or a neighbouring cell.
    fn nearest(&self, cell: h3o::CellIndex, phash: u64, max_bits: u32) -> Option<(&str, u32)> {
        let parent = cell.parent(self.resolution)?;
        parent
            .grid_disk::<Vec<_>>(1)
            .into_iter()
            .filter_map(|c| self.by_cell.get(&c))
            .flatten()
            .map(|(id, h)| (id.as_str(), image_ops::hamming(*h, phash)))
            .filter(|(_, d)| *d <= max_bits)
            .min_by_key(|(_, d)| *d)
    }
}

/// A frame chosen by sampling, on its way to detection.
struct Candidate {
    index: u64,
    pose: Pose,
    rgb: image::RgbImage,
    /// Set when the camera has not moved since the last candidate.
    stationary_of: Option<String>,
    inputs: Inputs,
}

/// The detectors' inputs for a candidate, prepared beside decoding; `None`
/// for a frame already known to be a duplicate.
type Inputs = Option<Vec<crate::detect::Prepared>>;

/// Everything the blocking part of one upload needs.
struct Job {
    path: PathBuf,
    is_video: bool,
    start: DateTime<Utc>,
    track: Track,
    config: VisionConfig,
    upload: PendingUpload,
    index: DedupeIndex,
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Handle,
    now: DateTime<Utc>,
}

/// A stable id for the `index`th picture of `upload`, so retries agree.
pub fn frame_id(upload: UploadId, index: u64) -> String {
    let digest = Sha256::digest(format!("{upload}/{index}").as_bytes());
    let h = hex::encode(&digest[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// An error, and the objects already written that must be removed.
type Failure = Box<(Error, Vec<StorePath>)>;

impl Job {
    /// Decoding on one thread, detection on this one, JPEG encoding and
    /// storing on a third: the stages overlap.
    fn run(self, anonymizer: &mut Anonymizer) -> std::result::Result<Vec<FrameRecord>, Failure> {
        let (cand_tx, cand_rx) = mpsc::sync_channel::<Candidate>(3);
        let (enc_tx, enc_rx) = mpsc::sync_channel::<(FrameRecord, image::RgbImage)>(3);
        let decoder = {
            let (path, is_video, start, track, config, upload) = (
                self.path.clone(),
                self.is_video,
                self.start,
                self.track.clone(),
                self.config.clone(),
                self.upload.upload_id,
            );
            std::thread::spawn(move || {
                sample_frames(&path, is_video, start, &track, &config, upload, cand_tx)
            })
        };
        let encoder = {
            let (store, runtime, quality) = (
                Arc::clone(&self.store),
                self.runtime.clone(),
                self.config.jpeg_quality,
            );
            std::thread::spawn(move || -> std::result::Result<Vec<FrameRecord>, Failure> {
                let mut rows = Vec::new();
                let mut written = Vec::new();
                for (mut row, rgb) in enc_rx {
                    let stored = image_ops::encode_jpeg(&rgb, quality).and_then(|jpeg| {
                        let key = StorePath::from(row.image_key.clone().unwrap_or_default());
                        row.image_bytes = jpeg.len() as u64;
                        runtime
                            .block_on(store.put(&key, PutPayload::from(jpeg)))
                            .map(|_| key)
                            .map_err(Error::from)
                    });
                    match stored {
                        Ok(key) => written.push(key),
                        Err(e) => return Err(Box::new((e, written))),
                    }
                    rows.push(row);
                }
                Ok(rows)
            })
        };
        let versions = anonymizer.model_versions();
        let mut dedupe_rows = Vec::new();
        let mut failure = None;
        let mut last_pixels: Option<(String, [u8; 32])> = None;
        for cand in cand_rx.iter() {
            let cell = match hexroad_lake::grid::cell_at(cand.pose.lat, cand.pose.lon) {
                Ok(c) => c,
                Err(_) => continue,
            };
            let id = frame_id(self.upload.upload_id, cand.index);
            let phash = image_ops::phash(&cand.rgb);
            let (quality, sharpness) = image_ops::quality(&cand.rgb);
            let pixels: [u8; 32] = Sha256::digest(cand.rgb.as_raw()).into();
            let mut row = FrameRecord {
                frame_id: id.clone(),
                upload_id: self.upload.upload_id,
                device_id: self.upload.device_id.clone(),
                contributor_id: self.upload.contributor_id.clone(),
                ts: cand.pose.ts,
                lat: cand.pose.lat,
                lon: cand.pose.lon,
                heading: cand.pose.heading,
                speed: cand.pose.speed,
                cell: u64::from(cell),
                image_key: None,
                width: cand.rgb.width(),
                height: cand.rgb.height(),
                image_bytes: 0,
                faces_blurred: 0,
                plates_blurred: 0,
                phash,
                quality: f64::from(quality),
                sharpness: f64::from(sharpness),
                dedupe_of: None,
                dedupe_reason: None,
                model_versions: versions.clone(),
                processed_at: self.now,
            };
            let duplicate = if let Some(of) = cand.stationary_of.clone() {
                Some((of, "stationary".to_owned()))
            } else if let Some((of, _)) = last_pixels.as_ref().filter(|(_, p)| *p == pixels) {
                Some((of.clone(), "identical".to_owned()))
            } else {
                self.index
                    .nearest(cell, phash, self.config.phash_max_bits)
                    .map(|(of, bits)| {
                        (
                            of.to_owned(),
                            format!("near_duplicate: {bits} bits from {of}"),
                        )
                    })
            };
            if let Some((of, reason)) = duplicate {
                row.dedupe_of = Some(of);
                row.dedupe_reason = Some(reason);
                dedupe_rows.push(row);
                continue;
            }
            let mut rgb = cand.rgb;
            let hidden = match cand.inputs {
                Some(inputs) => anonymizer.anonymize_prepared(&mut rgb, inputs),
                None => anonymizer.anonymize(&mut rgb),
            };
            match hidden {
                Ok(hidden) => {
                    row.faces_blurred = hidden.faces;
                    row.plates_blurred = hidden.plates;
                }
                Err(e) => {
                    // Fail closed: this frame, and so this upload, is not published.
                    failure = Some(e);
                    break;
                }
            }
            row.image_key = Some(format!(
                "frames/{}/{}.jpg",
                row.ts.format("%Y/%m/%d"),
                row.frame_id
            ));
            last_pixels = Some((id, pixels));
            if enc_tx.send((row, rgb)).is_err() {
                break;
            }
        }
        drop(cand_rx);
        drop(enc_tx);
        let decoded = decoder
            .join()
            .unwrap_or_else(|_| Err(Error::Internal("the decoder thread panicked".into())));
        let encoded = encoder.join().unwrap_or_else(|_| {
            Err(Box::new((
                Error::Internal("the encoder thread panicked".into()),
                Vec::new(),
            )))
        });
        let mut rows = encoded?;
        let written: Vec<StorePath> = rows
            .iter()
            .filter_map(|r| r.image_key.as_deref().map(StorePath::from))
            .collect();
        if let Some(e) = failure.or(decoded.err()) {
            return Err(Box::new((e, written)));
        }
        rows.extend(dedupe_rows);
        rows.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.frame_id.cmp(&b.frame_id)));
        Ok(rows)
    }
}

/// Decodes the upload and sends the frames due by distance.
fn sample_frames(
    path: &Path,
    is_video: bool,
    start: DateTime<Utc>,
    track: &Track,
    config: &VisionConfig,
    upload: UploadId,
    tx: mpsc::SyncSender<Candidate>,
) -> Result<()> {
    let mut sampler = Sampler::new(config.sample_distance_m);
    let mut last: Option<(u64, Pose)> = None;
    let mut consider = |index: u64,
                        ts: DateTime<Utc>,
                        rgb: &mut dyn FnMut() -> Result<image::RgbImage>|
     -> Result<Flow> {
        let Some(pose) = track.at(ts, config.max_track_gap_s) else {
            return Ok(Flow::Continue);
        };
        if !sampler.due(&pose) {
            return Ok(Flow::Continue);
        }
        let stationary_of = last
            .filter(|(_, p)| {
                haversine_m((p.lat, p.lon), (pose.lat, pose.lon)) < config.still_distance_m
                    && angle_between(p.heading, pose.heading) < config.still_angle_deg
            })
            .map(|(i, _)| frame_id(upload, i));
        if stationary_of.is_none() {
            last = Some((index, pose));
        }
        let rgb = rgb()?;
        let inputs = match stationary_of {
            None => Some(crate::prepare_all(&config.detectors, &rgb)?),
            Some(_) => None,
        };
        let cand = Candidate {
            index,
            pose,
            rgb,
            inputs,
            stationary_of,
        };
        Ok(if tx.send(cand).is_ok() {
            Flow::Continue
        } else {
            Flow::Stop
        })
    };
    if is_video {
        let mut index = 0u64;
        video::decode(path, |picture| {
            let ts = start + chrono::Duration::from_std(picture.pts).unwrap_or_default();
            let flow = consider(index, ts, &mut || picture.to_rgb())?;
            index += 1;
            Ok(flow)
        })?;
        Ok(())
    } else {
        bundle_frames(path, &mut consider)
    }
}

/// Offered each picture's index and time, and a way to get its pixels.
type Consider<'a> =
    dyn FnMut(u64, DateTime<Utc>, &mut dyn FnMut() -> Result<image::RgbImage>) -> Result<Flow> + 'a;

/// The JPEG frames of a tar bundle, named `<unix_ms>.jpg`, in time order.
fn bundle_frames(path: &Path, consider: &mut Consider<'_>) -> Result<()> {
    use std::io::Read;
    let bad = |reason: String| Error::Input {
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut archive = tar::Archive::new(file);
    let mut frames: Vec<(i64, Vec<u8>)> = Vec::new();
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("corrupt tar archive: {e}")))?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let base = name.rsplit('/').next().unwrap_or(&name).to_owned();
        if let Some(ms) = base
            .strip_suffix(".jpg")
            .or_else(|| base.strip_suffix(".jpeg"))
            .and_then(|s| s.parse::<i64>().ok())
        {
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .map_err(|e| bad(format!("{name}: truncated: {e}")))?;
            frames.push((ms, data));
        }
    }
    frames.sort_by_key(|(ms, _)| *ms);
    for (i, (ms, data)) in frames.into_iter().enumerate() {
        let ts = DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| bad(format!("{ms}.jpg: bad time")))?;
        let mut decode = || {
            image::load_from_memory(&data)
                .map(|d| d.to_rgb8())
                .map_err(|e| bad(format!("{ms}.jpg: {e}")))
        };
        if consider(i as u64, ts, &mut decode)? == Flow::Stop {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ids_are_stable_and_distinct() {
        let u: UploadId = "0195f3c8-0000-7000-8000-000000000001".parse().unwrap();
        assert_eq!(frame_id(u, 3), frame_id(u, 3));
        assert_ne!(frame_id(u, 3), frame_id(u, 4));
        assert_eq!(frame_id(u, 0).len(), 36);
    }

    #[test]
    fn dedupe_index_finds_near_hashes_next_door_only() {
        let cell = hexroad_lake::grid::cell_at(60.17, 24.94).unwrap();
        let far = hexroad_lake::grid::cell_at(60.20, 24.90).unwrap();
        let mut index = DedupeIndex::new(11);
        index.insert(cell, "a".into(), 0xffff_0000_ffff_0000);
        assert_eq!(
            index.nearest(cell, 0xffff_0000_ffff_0003, 8),
            Some(("a", 2))
        );
        assert_eq!(index.nearest(cell, 0x0000_ffff_0000_ffff, 8), None);
        assert_eq!(index.nearest(far, 0xffff_0000_ffff_0000, 8), None);
    }

    #[test]
    fn settings_validate_and_defaults_are_sane() {
        assert!(VisionConfig::default().validate().is_ok());
        let bad = VisionConfig {
            sample_distance_m: 0.0,
            ..VisionConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("sample_distance_m"));
    }
}
