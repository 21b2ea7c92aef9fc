//! The tus 1.0 endpoints under `/v1/uploads`: OPTIONS, creation (POST), HEAD,
//! PATCH and termination (DELETE). What happens after the last byte is in
//! lives in [`crate::finish`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hexroad_lake::{UploadStatus, UploadSummary};
use hexroad_wire::{UploadId, UploadKind};
use tracing::{info, warn};

use crate::ApiError;
use crate::IngestConfig;
use crate::app::Ingest;
use crate::extract::{
    Bodiless, Chunk, ChunkHeaders, Creation, CreationHeaders, SignedDevice, TusResumable,
};
use crate::finish::Finisher;
use crate::tus::{ChunkEnd, Quota, Refusal, UploadInfo};
use crate::tus_headers::CHECKSUM_ALGORITHMS;
use crate::validate;

/// Answers to tus requests are never cached by a proxy.
fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

pub async fn options(State(state): State<Arc<Ingest>>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    no_store(h);
    h.insert("tus-version", HeaderValue::from_static("1.0.0"));
    h.insert(
        "tus-extension",
        HeaderValue::from_static("creation,checksum,termination,expiration"),
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

pub async fn create(
    State(state): State<Arc<Ingest>>,
    _: TusResumable,
    device: SignedDevice<Creation>,
    headers: CreationHeaders,
) -> Result<Response, ApiError> {
    let device = device.record;
    let CreationHeaders { length, metadata } = headers;
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
    let field = |k: &str| {
        metadata.get(k).ok_or_else(|| {
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
    let info = UploadInfo {
        upload_id: UploadId::new_random(),
        device_id: device.device_id.clone(),
        contributor_id: device.contributor_id.clone(),
        kind,
        format,
        length,
        sha256,
        drive_id: metadata.get("drive_id").cloned(),
        created_at: (state.clock)(),
    };
    let config = &state.config;
    let quota = Quota {
        max_open: config.max_open_uploads,
        max_device_bytes: config.max_device_staged_bytes,
        max_total_bytes: config.max_staged_bytes,
    };
    if let Err(refusal) = state.staging.create(info.clone(), quota).await? {
        return Err(refused(&device.device_id, refusal, config));
    }
    info!(upload_id = %info.upload_id, device_id = %info.device_id, kind = kind.as_str(), length, "upload created");
    let mut response = StatusCode::CREATED.into_response();
    let h = response.headers_mut();
    no_store(h);
    expires_header(h, &state, &info);
    let location = format!("/v1/uploads/{}", info.upload_id);
    h.insert(header::LOCATION, HeaderValue::from_str(&location)?);
    Ok(response)
}

/// Why staging had no room for a new upload, as an answer.
fn refused(device: &hexroad_wire::DeviceId, refusal: Refusal, config: &IngestConfig) -> ApiError {
    match refusal {
        Refusal::TooManyOpen(open) => ApiError::too_many(
            "too_many_open_uploads",
            format!(
                "device {device} has {open} unfinished uploads; finish or terminate some (limit {})",
                config.max_open_uploads
            ),
            5,
        ),
        Refusal::DeviceBytes(held) => ApiError::too_many(
            "device_quota",
            format!(
                "device {device}'s unfinished uploads declare {held} bytes; this one would pass \
                 the limit of {} bytes: finish or terminate some",
                config.max_device_staged_bytes
            ),
            5,
        ),
        Refusal::TotalBytes => ApiError::unavailable(
            "staging_full",
            "the server holds as many unfinished uploads as it can; retry later",
            60,
        ),
    }
}

/// tus `Upload-Expires`, an RFC 9110 HTTP date.
fn expires_header(h: &mut HeaderMap, state: &Ingest, info: &UploadInfo) {
    let date = state.expires_at(info).format("%a, %d %b %Y %H:%M:%S GMT");
    if let Ok(v) = HeaderValue::from_str(&date.to_string()) {
        h.insert("upload-expires", v);
    }
}

/// An upload past its `Upload-Expires` is gone, whether or not the sweeper
/// has reached it yet.
async fn expire_if_due(
    state: &Ingest,
    guard: &mut Option<crate::tus::Slot>,
) -> Result<(), ApiError> {
    let Some(slot) = guard.as_ref() else {
        return Ok(());
    };
    if (state.clock)() < state.expires_at(&slot.info) {
        return Ok(());
    }
    let info = slot.info.clone();
    state.staging.remove(&info).await?;
    *guard = None;
    Err(ApiError::new(
        StatusCode::GONE,
        "upload_expired",
        format!(
            "upload {} expired at {}; create it again",
            info.upload_id,
            state.expires_at(&info).to_rfc3339()
        ),
    ))
}

fn parse_upload_id(id: &str) -> Result<UploadId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("no upload {id:?}")))
}

/// What the lake stored of upload `id`, if it finished.
async fn stored(state: &Ingest, id: UploadId) -> Result<Option<UploadSummary>, ApiError> {
    state
        .lake
        .upload_summary(id)
        .await
        .map_err(|e| ApiError::internal("looking up a stored upload", &e))
}

fn finished_response(summary: &UploadSummary) -> Response {
    if summary.status == UploadStatus::Rejected {
        let stored = summary.reject_reason.clone().unwrap_or_default();
        let (code, message) = stored.split_once(": ").unwrap_or(("rejected", &stored));
        return ApiError::unprocessable(validate::static_code(code), message.to_owned())
            .into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    finished_headers(response.headers_mut(), summary);
    response
}

fn finished_headers(h: &mut HeaderMap, summary: &UploadSummary) {
    no_store(h);
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

pub async fn head(
    State(state): State<Arc<Ingest>>,
    Path(id): Path<String>,
    device: SignedDevice<Bodiless>,
) -> Result<Response, ApiError> {
    let device = device.record;
    let id = parse_upload_id(&id)?;
    let not_found = || ApiError::not_found(format!("no upload {id} for this device"));
    let mut guard = state.staging.lock(id).await?;
    if state.shared.is_some() {
        reread_staging(&state, id, &mut guard).await?;
    }
    if guard
        .as_ref()
        .is_some_and(|s| s.info.device_id == device.device_id)
    {
        expire_if_due(&state, &mut guard).await?;
    }
    // Finished (no staging left, or a whole one a crash left behind after
    // its commit): what the lake stored. Looked up only then, so a HEAD of
    // an upload in progress costs no read of the tables.
    let receiving = guard.as_ref().is_some_and(|s| s.offset < s.info.length);
    if !receiving && let Some(summary) = stored(&state, id).await? {
        if summary.device_id != device.device_id {
            return Err(not_found());
        }
        let mut response = StatusCode::OK.into_response();
        finished_headers(response.headers_mut(), &summary);
        return Ok(response);
    }
    let Some(slot) = guard
        .as_ref()
        .filter(|s| s.info.device_id == device.device_id)
    else {
        return Err(not_found());
    };
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    no_store(h);
    h.insert("upload-offset", HeaderValue::from(slot.offset));
    h.insert("upload-length", HeaderValue::from(slot.info.length));
    expires_header(h, &state, &slot.info);
    Ok(response)
}

pub async fn patch(
    State(state): State<Arc<Ingest>>,
    Path(id): Path<String>,
    _: TusResumable,
    device: SignedDevice<Chunk>,
    chunk: ChunkHeaders,
    body: Body,
) -> Result<Response, ApiError> {
    let device = device.record;
    let ChunkHeaders { offset, checksum } = chunk;
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
    let mut guard = state.staging.lock(id).await?;
    let lease = hold_for_writing(&state, id, &mut guard).await?;
    if guard
        .as_ref()
        .is_some_and(|s| s.info.device_id == device.device_id)
    {
        expire_if_due(&state, &mut guard).await?;
    }
    let Some(slot) = guard.as_mut() else {
        // No staging: finished (perhaps while this request waited for the
        // lock), or never created. A whole staging a crash left behind is
        // finished again below, which finds its commit and adds nothing.
        return match stored(&state, id).await? {
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
    let idle = state.config.body_idle_timeout;
    let end = state
        .staging
        .write_chunk(slot, stream, checksum, idle)
        .await
        .map_err(|e| store_unavailable("staging a chunk", &e))?;
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
            warn!(upload_id = %id, received, offset = slot.offset, "upload body cut; dropped the unverifiable chunk");
            return Err(ApiError::bad_request(
                "body_cut",
                "the request body ended early and could not be checked against \
                 Upload-Checksum, so none of it was kept; HEAD for the offset and resume",
            ));
        }
        ChunkEnd::Stalled { received } => {
            warn!(upload_id = %id, received, offset = slot.offset, "upload body went silent; dropped the chunk");
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_stalled",
                format!(
                    "the request body sent nothing for {} s; nothing of it was kept; \
                     HEAD for the offset and resume",
                    idle.as_secs_f64()
                ),
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
        no_store(h);
        h.insert("upload-offset", HeaderValue::from(slot.offset));
        expires_header(h, &state, &slot.info);
        return Ok(response);
    }
    // The rest runs to completion whatever happens to the connection: a
    // device that hangs up mid-commit must find its upload finished (or
    // untouched) when it retries, never half-written.
    let task = tokio::spawn(finish_upload(Arc::clone(&state), guard, lease));
    let summary = task
        .await
        .map_err(|e| ApiError::internal("finishing an upload", &e))??;
    Ok(finished_response(&summary))
}

/// With other nodes: the lease on writing a staged upload (another node
/// holding it is a pause for the device), and the upload as the store has
/// it now, whatever another node wrote since this one last looked. On one
/// machine the upload's lock is enough: `None`.
async fn hold_for_writing(
    state: &Ingest,
    id: UploadId,
    guard: &mut Option<crate::tus::Slot>,
) -> Result<Option<crate::shared::UploadLease>, ApiError> {
    let Some(shared) = state.shared.as_ref().filter(|_| guard.is_some()) else {
        return Ok(None);
    };
    let lease = shared.receive(id).await?;
    reread_staging(state, id, guard).await?;
    Ok(Some(lease))
}

/// The upload as the store has it now: another node may have received more
/// of it, or finished it, since this one looked.
async fn reread_staging(
    state: &Ingest,
    id: UploadId,
    guard: &mut Option<crate::tus::Slot>,
) -> Result<(), ApiError> {
    state
        .staging
        .reload(id, guard)
        .await
        .map_err(|e| store_unavailable("reading staging", &e))
}

/// Why finishing failed, as the device hears it: the store failing to take
/// the upload (unreachable, refusing a write) is a 503 with a pause before
/// the retry, since nothing of the upload was listed and its staged bytes
/// are kept; anything else is a fault of ours (500).
fn finish_error(e: crate::finish::FinishError) -> ApiError {
    use crate::finish::FinishError;
    match &e {
        FinishError::Commit(hexroad_lake::Error::GroupCommit(_))
        | FinishError::Raw(_)
        | FinishError::Assemble(_) => store_unavailable("finishing an upload", &e),
        _ => ApiError::internal("finishing an upload", &e),
    }
}

/// The store failing to take what a device sent (a chunk, or the upload
/// it completes): a 503 with a pause, since nothing past the offset a HEAD
/// reports was kept and the device may simply send it again.
fn store_unavailable(context: &str, cause: &(dyn std::error::Error + 'static)) -> ApiError {
    warn!(cause = %hexroad_http::chain(cause), "{context}: the store failed; the device is asked to retry");
    ApiError::unavailable(
        "store_unavailable",
        "the upload could not be stored just now: retry (HEAD gives the offset)",
        STORE_RETRY_AFTER_S,
    )
}

/// The pause asked of a device whose upload the store did not take.
const STORE_RETRY_AFTER_S: u64 = 2;

/// Checks, validates and commits a fully received upload, then removes its
/// staging; holds the upload's lock throughout.
async fn finish_upload(
    state: Arc<Ingest>,
    mut guard: tokio::sync::OwnedMutexGuard<Option<crate::tus::Slot>>,
    _lease: Option<crate::shared::UploadLease>,
) -> Result<UploadSummary, ApiError> {
    let Some(slot) = guard.as_ref() else {
        return Err(ApiError::not_found("the upload is gone"));
    };
    let finisher = Finisher {
        lake: &state.lake,
        staging: &state.staging,
        config: &state.config,
        scratch: &state.scratch,
        now: (state.clock)(),
    };
    let (summary, counts) = finisher.finish(slot).await.map_err(finish_error)?;
    let info = slot.info.clone();
    state.metrics.inc(
        "hexroad_uploads_finished_total",
        &[
            ("kind", info.kind.as_str()),
            ("status", summary.status.as_str()),
        ],
    );
    info!(upload_id = %info.upload_id, device_id = %info.device_id, status = summary.status.as_str(), points = counts.points, samples = counts.samples, "upload finished");
    *guard = None;
    if let Some(shared) = &state.shared
        && summary.status == UploadStatus::Accepted
        && matches!(info.kind, UploadKind::Video | UploadKind::Frames)
    {
        shared.queue_for_vision(info.upload_id).await;
    }
    if let Err(e) = state.staging.remove(&info).await {
        // The upload is committed; leftover staging is only disk space.
        warn!(upload_id = %info.upload_id, error = %e, "could not clean staging");
    }
    Ok(summary)
}

pub async fn terminate(
    State(state): State<Arc<Ingest>>,
    Path(id): Path<String>,
    _: TusResumable,
    device: SignedDevice<Bodiless>,
) -> Result<Response, ApiError> {
    let device = device.record;
    let id = parse_upload_id(&id)?;
    let mut guard = state.staging.lock(id).await?;
    // Not while another node receives (or finishes) it.
    let _lease = hold_for_writing(&state, id, &mut guard).await?;
    let receiving = guard.as_ref().is_some_and(|s| s.offset < s.info.length);
    if !receiving
        && let Some(summary) = stored(&state, id).await?
        && summary.device_id == device.device_id
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_finished",
            format!("upload {id} is finished and stored; it cannot be terminated"),
        ));
    }
    let Some(slot) = guard
        .as_ref()
        .filter(|s| s.info.device_id == device.device_id)
    else {
        return Err(ApiError::not_found(format!(
            "no upload {id} for this device"
        )));
    };
    let info = slot.info.clone();
    state.staging.remove(&info).await?;
    *guard = None;
    let mut response = StatusCode::NO_CONTENT.into_response();
    no_store(response.headers_mut());
    Ok(response)
}
