//! The router, its state, and one handler per endpoint.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, head, post};
use chrono::Duration;
use hexroad_lake::object_store::ObjectStoreExt;
use hexroad_lake::object_store::path::Path as StorePath;
use hexroad_lake::{
    CommitOutcome, DeviceRecord, DeviceStatus, Lake, UploadRecord, UploadStatus, UploadSummary,
};
use hexroad_wire::{ContributorId, DeviceId, UploadId, UploadKind};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::auth::{self, NonceCache, Verified};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::tus::{ChunkEnd, Slot, Staging, UploadInfo};
use crate::tus_headers::{CHECKSUM_ALGORITHMS, ChunkChecksum, TusHeaderError, parse_metadata};
use crate::validate::{self, Rejection, Rules};
use crate::{ApiError, Clock, IngestConfig, StartError, openapi, probe};

/// Everything the handlers share.
pub struct Ingest {
    lake: Arc<Lake>,
    config: IngestConfig,
    clock: Clock,
    devices: RwLock<HashMap<DeviceId, DeviceRecord>>,
    nonces: NonceCache,
    limits: Limits,
    staging: Staging,
    metrics: Metrics,
    scratch: PathBuf,
    registration: tokio::sync::Mutex<()>,
}

impl Ingest {
    /// Gathers the service's state from the lake and the staging area.
    pub async fn open(
        lake: Arc<Lake>,
        config: IngestConfig,
        clock: Clock,
    ) -> Result<Arc<Self>, StartError> {
        config.validate()?;
        probe::init().map_err(StartError::Gstreamer)?;
        let devices = lake
            .devices()
            .await?
            .into_iter()
            .map(|d| (d.device_id.clone(), d))
            .collect();
        let staging =
            Staging::open(lake.blobs())
                .await
                .map_err(|source| hexroad_lake::Error::Blob {
                    key: "staging/".into(),
                    source,
                })?;
        let limits = Limits::new(
            config.requests_per_second,
            config.request_burst,
            config.max_concurrent_patches,
        );
        Ok(Arc::new(Self {
            lake,
            config,
            clock,
            devices: RwLock::new(devices),
            nonces: NonceCache::default(),
            limits,
            staging,
            metrics: Metrics::default(),
            scratch: std::env::temp_dir(),
            registration: tokio::sync::Mutex::new(()),
        }))
    }

    fn window_s(&self) -> u64 {
        self.config.signature_max_age_s + self.config.clock_skew_s
    }

    fn verify(&self, parts: &Parts, required: &[&str]) -> Result<Verified, ApiError> {
        auth::verify(
            parts,
            (self.clock)(),
            self.config.signature_max_age_s,
            self.config.clock_skew_s,
            required,
        )
        .inspect_err(|e| {
            self.metrics
                .inc("hexroad_signature_failures_total", &[("reason", e.code)]);
        })
    }

    /// Refuses a used nonce, then charges the device's rate limit.
    fn admit(&self, v: &Verified) -> Result<(), ApiError> {
        self.nonces
            .admit(v, (self.clock)(), self.window_s())
            .inspect_err(|e| {
                self.metrics
                    .inc("hexroad_signature_failures_total", &[("reason", e.code)]);
            })?;
        self.limits.take_request(&v.device, Instant::now())
    }

    /// Verifies a request from a registered, active device.
    fn authenticate(&self, parts: &Parts, required: &[&str]) -> Result<DeviceRecord, ApiError> {
        let v = self.verify(parts, required)?;
        let record = {
            let devices = self.devices.read().unwrap_or_else(|e| e.into_inner());
            devices.get(&v.device).cloned()
        };
        let record = match record {
            None => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "unknown_device",
                    format!(
                        "device {} is not registered: POST /v1/devices first",
                        v.device
                    ),
                ));
            }
            Some(r) if r.status == DeviceStatus::Revoked => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "revoked_device",
                    format!("device {} has been revoked", v.device),
                ));
            }
            Some(r) => r,
        };
        self.admit(&v)?;
        Ok(record)
    }
}

/// The service's routes over `state`.
pub fn app(state: Arc<Ingest>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { axum::Json(openapi::document()) }),
        )
        .route("/v1/devices", post(register))
        .route("/v1/devices/{id}", delete(revoke))
        .route("/v1/uploads", post(create_upload).options(tus_options))
        .route(
            "/v1/uploads/{id}",
            head(head_upload).patch(patch_upload).delete(terminate),
        )
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            count_requests,
        ))
        .with_state(state)
}

async fn count_requests(State(state): State<Arc<Ingest>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let response = next.run(req).await;
    state.metrics.inc(
        "hexroad_http_requests_total",
        &[
            ("method", &method),
            ("route", &route),
            ("status", response.status().as_str()),
        ],
    );
    response
}

async fn metrics(State(state): State<Arc<Ingest>>) -> impl IntoResponse {
    let open: usize = {
        let devices = state.devices.read().unwrap_or_else(|e| e.into_inner());
        devices.keys().map(|d| state.staging.open_count(d)).sum()
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(open),
    )
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn tus_headers(headers: &mut HeaderMap) {
    headers.insert("tus-resumable", HeaderValue::from_static("1.0.0"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn require_tus(parts: &Parts) -> Result<(), ApiError> {
    match header_str(&parts.headers, "tus-resumable") {
        Some("1.0.0") => Ok(()),
        other => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "tus_version",
            format!("Tus-Resumable must be 1.0.0, got {other:?}"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    public_key: String,
    contributor_id: String,
    #[serde(default)]
    make: String,
    #[serde(default)]
    model: String,
}

async fn register(State(state): State<Arc<Ingest>>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let v = state.verify(&parts, &["content-digest"])?;
    let body = axum::body::to_bytes(body, state.config.max_json_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "registration bodies are limited to {} bytes",
                    state.config.max_json_bytes
                ),
            )
        })?;
    check_content_digest(&parts, &body)?;
    state.admit(&v)?;
    let reg: Registration = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("bad_body", format!("registration body: {e}")))?;
    let device: DeviceId = reg.public_key.parse().map_err(|e: hexroad_wire::IdError| {
        ApiError::bad_request("bad_public_key", e.to_string())
    })?;
    if device != v.device {
        return Err(ApiError::unauthorized(
            "bad_signature",
            "the request must be signed by the key being registered (keyid must equal public_key)",
        ));
    }
    let contributor: ContributorId =
        reg.contributor_id
            .parse()
            .map_err(|e: hexroad_wire::IdError| {
                ApiError::bad_request("bad_contributor_id", e.to_string())
            })?;
    let _one_at_a_time = state.registration.lock().await;
    let existing = {
        let devices = state.devices.read().unwrap_or_else(|e| e.into_inner());
        devices.get(&device).cloned()
    };
    let body_json = |r: &DeviceRecord| {
        serde_json::json!({
            "device_id": r.device_id,
            "contributor_id": r.contributor_id,
            "status": r.status,
            "registered_at": r.registered_at,
        })
    };
    if let Some(existing) = existing {
        if existing.status == DeviceStatus::Revoked {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "revoked_device",
                format!("device {device} has been revoked and cannot register again"),
            ));
        }
        if existing.contributor_id != contributor {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_registered",
                format!("device {device} is registered to another contributor"),
            ));
        }
        return Ok((StatusCode::OK, axum::Json(body_json(&existing))).into_response());
    }
    let now = (state.clock)();
    let record = DeviceRecord {
        device_id: device.clone(),
        contributor_id: contributor,
        make: reg.make,
        model: reg.model,
        status: DeviceStatus::Active,
        changed_at: now,
        registered_at: now,
    };
    state.lake.record_device(&record).await?;
    state
        .devices
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(device.clone(), record.clone());
    state.metrics.inc("hexroad_devices_registered_total", &[]);
    info!(device_id = %device, contributor_id = %record.contributor_id, "device registered");
    Ok((StatusCode::CREATED, axum::Json(body_json(&record))).into_response())
}

fn check_content_digest(parts: &Parts, body: &[u8]) -> Result<(), ApiError> {
    let declared = header_str(&parts.headers, "content-digest").unwrap_or_default();
    let expected = hexroad_wire::signature::content_digest(&Sha256::digest(body));
    let matches = declared
        .split(',')
        .map(str::trim)
        .any(|member| member == expected);
    if matches {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "digest_mismatch",
            "Content-Digest does not match the body (expected a sha-256 member)",
        ))
    }
}

async fn revoke(
    State(state): State<Arc<Ingest>>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = req.into_parts();
    let mut record = state.authenticate(&parts, &[])?;
    if id != record.device_id.as_str() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a device may revoke only its own key",
        ));
    }
    record.status = DeviceStatus::Revoked;
    record.changed_at = (state.clock)();
    state.lake.record_device(&record).await?;
    info!(device_id = %record.device_id, "device revoked");
    state
        .devices
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(record.device_id.clone(), record);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn tus_options(State(state): State<Arc<Ingest>>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    tus_headers(h);
    h.insert("tus-version", HeaderValue::from_static("1.0.0"));
    h.insert(
        "tus-extension",
        HeaderValue::from_static("creation,checksum,termination"),
    );
    h.insert(
        "tus-checksum-algorithm",
        HeaderValue::from_static(CHECKSUM_ALGORITHMS),
    );
    h.insert(
        "tus-max-size",
        HeaderValue::from(state.config.max_upload_bytes),
    );
    response
}

async fn create_upload(
    State(state): State<Arc<Ingest>>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = req.into_parts();
    require_tus(&parts)?;
    let device = state.authenticate(&parts, &["upload-length", "upload-metadata"])?;
    let length: u64 = header_str(&parts.headers, "upload-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_upload_length",
                "Upload-Length must be a non-negative integer",
            )
        })?;
    if length == 0 {
        return Err(ApiError::bad_request(
            "bad_upload_length",
            "empty uploads are not accepted",
        ));
    }
    if length > state.config.max_upload_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "Upload-Length {length} exceeds the limit of {} bytes",
                state.config.max_upload_bytes
            ),
        ));
    }
    let meta = parse_metadata(header_str(&parts.headers, "upload-metadata").unwrap_or_default())
        .map_err(|e| ApiError::bad_request("bad_metadata", e.to_string()))?;
    let field = |k: &str| {
        meta.get(k).ok_or_else(|| {
            ApiError::bad_request(
                "bad_metadata",
                format!("Upload-Metadata must include {k:?}"),
            )
        })
    };
    let kind = UploadKind::parse(field("kind")?).ok_or_else(|| {
        ApiError::bad_request(
            "bad_metadata",
            "kind must be video, gnss, frames or telemetry",
        )
    })?;
    let format = field("format")?.to_ascii_lowercase();
    validate::check_format(kind, &format).map_err(|m| ApiError::bad_request("bad_metadata", m))?;
    let sha256 = field("sha256")?.to_ascii_lowercase();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "bad_metadata",
            "sha256 must be 64 hex digits",
        ));
    }
    let open = state.staging.open_count(&device.device_id);
    if open >= state.config.max_open_uploads {
        return Err(ApiError::too_many(
            "too_many_open_uploads",
            format!(
                "device {} has {open} unfinished uploads; finish or terminate some (limit {})",
                device.device_id, state.config.max_open_uploads
            ),
            5,
        ));
    }
    let info = UploadInfo {
        upload_id: UploadId::new_random(),
        device_id: device.device_id.clone(),
        contributor_id: device.contributor_id.clone(),
        kind,
        format,
        length,
        sha256,
        drive_id: meta.get("drive_id").cloned(),
        created_at: (state.clock)(),
    };
    state
        .staging
        .create(info.clone())
        .await
        .map_err(|e| ApiError::internal("creating upload", e))?;
    info!(upload_id = %info.upload_id, device_id = %info.device_id, kind = kind.as_str(), length, "upload created");
    let mut response = StatusCode::CREATED.into_response();
    let h = response.headers_mut();
    tus_headers(h);
    let location = format!("/v1/uploads/{}", info.upload_id);
    h.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).map_err(|e| ApiError::internal("location", e))?,
    );
    Ok(response)
}

fn parse_upload_id(id: &str) -> Result<UploadId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("no upload {id:?}")))
}

fn finished_response(summary: &UploadSummary) -> Response {
    if summary.status == UploadStatus::Rejected {
        let stored = summary.reject_reason.clone().unwrap_or_default();
        let (code, message) = stored.split_once(": ").unwrap_or(("rejected", &stored));
        return ApiError::unprocessable(static_code(code), message.to_owned()).into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    finished_headers(response.headers_mut(), summary);
    response
}

fn finished_headers(h: &mut HeaderMap, summary: &UploadSummary) {
    tus_headers(h);
    h.insert("upload-offset", HeaderValue::from(summary.bytes));
    h.insert("upload-length", HeaderValue::from(summary.bytes));
    h.insert(
        "hexroad-upload-status",
        HeaderValue::from_static(summary.status.as_str()),
    );
    if let Ok(v) = HeaderValue::from_str(&summary.upload_id.to_string()) {
        h.insert("hexroad-upload-id", v);
    }
    if let Some(reason) = &summary.reject_reason {
        let printable: String = reason
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .collect();
        if let Ok(v) = HeaderValue::from_str(&printable) {
            h.insert("hexroad-reject-reason", v);
        }
    }
}

/// The stored reject codes, as the static strings errors carry.
fn static_code(code: &str) -> &'static str {
    const CODES: &[&str] = &[
        "sha256_mismatch",
        "corrupt_video",
        "unsupported_container",
        "unsupported_codec",
        "bad_track",
        "empty_track",
        "null_island",
        "coordinate_out_of_range",
        "future_timestamp",
        "non_monotonic_timestamps",
        "implausible_speed",
        "unknown_signal",
        "telemetry_out_of_range",
        "bad_telemetry",
        "bad_frames",
        "corrupt_image",
        "unreadable",
        "probe_failed",
        "bad_format",
    ];
    CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("rejected")
}

async fn head_upload(
    State(state): State<Arc<Ingest>>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = req.into_parts();
    let device = state.authenticate(&parts, &[])?;
    let id = parse_upload_id(&id)?;
    let not_found = || ApiError::not_found(format!("no upload {id} for this device"));
    if let Some(summary) = state.lake.upload_summary(id) {
        if summary.device_id != device.device_id {
            return Err(not_found());
        }
        let mut response = StatusCode::OK.into_response();
        finished_headers(response.headers_mut(), &summary);
        return Ok(response);
    }
    let guard = state
        .staging
        .lock(id)
        .await
        .map_err(|e| ApiError::internal("loading upload", e))?;
    let Some(slot) = guard
        .as_ref()
        .filter(|s| s.info.device_id == device.device_id)
    else {
        return Err(not_found());
    };
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    tus_headers(h);
    h.insert("upload-offset", HeaderValue::from(slot.offset));
    h.insert("upload-length", HeaderValue::from(slot.info.length));
    Ok(response)
}

fn parse_checksum(parts: &Parts) -> Result<ChunkChecksum, ApiError> {
    let value = header_str(&parts.headers, "upload-checksum").unwrap_or_default();
    ChunkChecksum::parse(value).map_err(|e| {
        let code = match e {
            TusHeaderError::ChecksumAlgorithm { .. } => "unsupported_checksum",
            _ => "bad_checksum",
        };
        ApiError::bad_request(code, e.to_string())
    })
}

async fn patch_upload(
    State(state): State<Arc<Ingest>>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    require_tus(&parts)?;
    let device = state.authenticate(&parts, &["upload-offset", "upload-checksum"])?;
    if header_str(&parts.headers, "content-type") != Some("application/offset+octet-stream") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_content_type",
            "PATCH bodies must be Content-Type: application/offset+octet-stream",
        ));
    }
    let offset: u64 = header_str(&parts.headers, "upload-offset")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_upload_offset",
                "Upload-Offset must be a non-negative integer",
            )
        })?;
    let checksum = parse_checksum(&parts)?;
    let id = parse_upload_id(&id)?;
    let _slot_claim = state.limits.claim_patch(&device.device_id)?;
    let not_found = || ApiError::not_found(format!("no upload {id} for this device"));
    let finished = |summary: UploadSummary| {
        if summary.device_id != device.device_id {
            Err(not_found())
        } else if offset != summary.bytes {
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "offset_mismatch",
                format!("upload {id} is finished at offset {}", summary.bytes),
            ))
        } else {
            Ok(finished_response(&summary))
        }
    };
    if let Some(summary) = state.lake.upload_summary(id) {
        return finished(summary);
    }
    let mut guard = state
        .staging
        .lock(id)
        .await
        .map_err(|e| ApiError::internal("loading upload", e))?;
    let Some(slot) = guard.as_mut() else {
        // Finished while this request waited for the lock?
        return match state.lake.upload_summary(id) {
            Some(summary) => finished(summary),
            None => Err(not_found()),
        };
    };
    if slot.info.device_id != device.device_id {
        return Err(not_found());
    }
    if offset != slot.offset {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "offset_mismatch",
            format!(
                "Upload-Offset is {offset} but the server holds {} bytes; HEAD for the offset",
                slot.offset
            ),
        ));
    }
    let stream = Body::into_data_stream(body);
    let end = state
        .staging
        .write_chunk(slot, stream, checksum)
        .await
        .map_err(|e| ApiError::internal("storing chunk", e))?;
    match end {
        ChunkEnd::TooLong => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body runs past Upload-Length {}", slot.info.length),
            ));
        }
        ChunkEnd::ChecksumMismatch => {
            return Err(ApiError::new(
                StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
                "checksum_mismatch",
                "the body does not match Upload-Checksum; nothing was stored",
            ));
        }
        ChunkEnd::Cut { received } => {
            state
                .metrics
                .add("hexroad_upload_bytes_received_total", &[], received as f64);
            warn!(upload_id = %id, received, offset = slot.offset, "upload body cut; kept what arrived");
            return Err(ApiError::bad_request(
                "body_cut",
                "the request body ended early; HEAD for the offset and resume",
            ));
        }
        ChunkEnd::Complete { received } => {
            state
                .metrics
                .add("hexroad_upload_bytes_received_total", &[], received as f64);
        }
    }
    if slot.offset < slot.info.length {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let h = response.headers_mut();
        tus_headers(h);
        h.insert("upload-offset", HeaderValue::from(slot.offset));
        return Ok(response);
    }
    let summary = finish(&state, slot).await?;
    let info = slot.info.clone();
    *guard = None;
    if let Err(e) = state.staging.remove(&info).await {
        // The upload is committed; leftover staging is only disk space.
        warn!(upload_id = %id, error = %e, "could not clean staging");
    }
    Ok(finished_response(&summary))
}

/// Checks, validates and commits a fully received upload.
async fn finish(state: &Ingest, slot: &Slot) -> Result<UploadSummary, ApiError> {
    let info = &slot.info;
    let scratch = tempfile::Builder::new()
        .prefix("hexroad-upload-")
        .tempfile_in(&state.scratch)
        .map_err(|e| ApiError::internal("scratch file", e))?;
    let sha = state
        .staging
        .assemble(slot, scratch.path())
        .await
        .map_err(|e| ApiError::internal("assembling upload", e))?;
    let rules = Rules {
        now: (state.clock)(),
        skew: Duration::seconds(i64::try_from(state.config.clock_skew_s).unwrap_or(i64::MAX)),
        max_speed_mps: state.config.max_speed_mps,
    };
    let outcome = if sha != info.sha256 {
        Err(Rejection::new(
            "sha256_mismatch",
            format!(
                "the bytes received hash to {sha}, not the declared {}",
                info.sha256
            ),
        ))
    } else {
        let path = scratch.path().to_owned();
        let (kind, format) = (info.kind, info.format.clone());
        tokio::task::spawn_blocking(move || validate::validate_file(&path, kind, &format, rules))
            .await
            .map_err(|e| ApiError::internal("validation task", e))?
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
            crate::tus::put_file(
                state.lake.blobs().as_ref(),
                &StorePath::from(key.as_str()),
                scratch.path(),
            )
            .await
            .map_err(|e| ApiError::internal("storing raw blob", e))?;
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
    let summary = match state.lake.commit_upload(record, &gnss, &telemetry).await? {
        CommitOutcome::Committed(stored) => {
            if stored.status == UploadStatus::Duplicate && !stored.object_key.is_empty() {
                // The first copy is kept; this one's blob adds nothing.
                let _ = state
                    .lake
                    .blobs()
                    .delete(&StorePath::from(stored.object_key.as_str()))
                    .await;
            }
            UploadSummary::from(&stored)
        }
        CommitOutcome::AlreadyStored(existing) => existing,
    };
    state.metrics.inc(
        "hexroad_uploads_finished_total",
        &[
            ("kind", info.kind.as_str()),
            ("status", summary.status.as_str()),
        ],
    );
    info!(upload_id = %info.upload_id, device_id = %info.device_id, status = summary.status.as_str(), points = gnss.len(), samples = telemetry.len(), "upload finished");
    Ok(summary)
}

async fn terminate(
    State(state): State<Arc<Ingest>>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = req.into_parts();
    require_tus(&parts)?;
    let device = state.authenticate(&parts, &[])?;
    let id = parse_upload_id(&id)?;
    if let Some(summary) = state.lake.upload_summary(id)
        && summary.device_id == device.device_id
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_finished",
            format!("upload {id} is finished and stored; it cannot be terminated"),
        ));
    }
    let mut guard = state
        .staging
        .lock(id)
        .await
        .map_err(|e| ApiError::internal("loading upload", e))?;
    let Some(slot) = guard
        .as_ref()
        .filter(|s| s.info.device_id == device.device_id)
    else {
        return Err(ApiError::not_found(format!(
            "no upload {id} for this device"
        )));
    };
    let info = slot.info.clone();
    state
        .staging
        .remove(&info)
        .await
        .map_err(|e| ApiError::internal("terminating upload", e))?;
    *guard = None;
    let mut response = StatusCode::NO_CONTENT.into_response();
    tus_headers(response.headers_mut());
    Ok(response)
}
