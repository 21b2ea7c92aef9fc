//! `POST /v1/devices` (register a key) and `DELETE /v1/devices/{id}`
//! (revoke one's own key).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use hexroad_lake::{DeviceRecord, DeviceStatus};
use hexroad_wire::{ContributorId, DeviceId};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::info;

use crate::ApiError;
use crate::app::Ingest;
use crate::extract::{
    Bodiless, JsonBody, Signed, SignedDevice, bounded_body, header_str, peer_address,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    public_key: String,
    contributor_id: String,
    #[serde(default)]
    make: String,
    #[serde(default)]
    model: String,
    /// A trusted manufacturer's signature over the key (required in
    /// `attested` registration).
    #[serde(default)]
    attestation: Option<crate::enrol::Attestation>,
    /// The contributor's signature adding the device to its account.
    #[serde(default)]
    binding: Option<crate::enrol::Binding>,
}

fn record_json(r: &DeviceRecord) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "device_id": r.device_id,
        "contributor_id": r.contributor_id,
        "status": r.status,
        "registered_at": r.registered_at,
    }))
}

pub async fn register(
    State(state): State<Arc<Ingest>>,
    signed: Signed<JsonBody>,
    parts: Parts,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let body = bounded_body(body, state.config.max_json_bytes, "registration").await?;
    check_content_digest(&parts, &body)?;
    let v = signed.verified;
    state.admit(&v).await?;
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
    let existing = state.device(&device);
    if existing.is_none() {
        state.limits.take_registration_from(
            peer_address(&parts),
            &contributor,
            std::time::Instant::now(),
        )?;
    }
    if let Some(existing) = existing {
        if existing.status == DeviceStatus::Revoked {
            return Err(ApiError::forbidden(
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
        return Ok((StatusCode::OK, record_json(&existing)).into_response());
    }
    let vouched = crate::enrol::vouch(
        &state,
        &device,
        &contributor,
        reg.attestation.as_ref(),
        reg.binding.as_ref(),
    )
    .await?;
    if let Some(account) = &vouched.new_account {
        state.lake.record_contributor_key(account).await?;
        info!(contributor_id = %contributor, "contributor account created");
    }
    let now = (state.clock)();
    // What vouched for the device is written before the device itself: a
    // crash between the two leaves an enrolment without a device, which the
    // retry completes, never a device whose binding is unknown.
    state
        .lake
        .record_enrolment(&hexroad_lake::Enrolment {
            device_id: device.clone(),
            contributor_id: contributor.clone(),
            manufacturer: vouched.manufacturer,
            serial: vouched.serial,
            bound: vouched.bound,
            at: now,
        })
        .await?;
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
    state.remember_device(record.clone());
    state.metrics.inc("hexroad_devices_registered_total", &[]);
    info!(device_id = %device, contributor_id = %record.contributor_id, "device registered");
    Ok((StatusCode::CREATED, record_json(&record)).into_response())
}

pub(crate) fn check_content_digest(parts: &Parts, body: &[u8]) -> Result<(), ApiError> {
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

pub async fn revoke(
    State(state): State<Arc<Ingest>>,
    Path(id): Path<String>,
    device: SignedDevice<Bodiless>,
) -> Result<Response, ApiError> {
    let mut record = device.record;
    if id != record.device_id.as_str() {
        return Err(ApiError::forbidden(
            "forbidden",
            "a device may revoke only its own key",
        ));
    }
    record.status = DeviceStatus::Revoked;
    record.changed_at = (state.clock)();
    state.lake.record_device(&record).await?;
    info!(device_id = %record.device_id, "device revoked");
    let device_id = record.device_id.clone();
    state.remember_device(record);
    // A revoked key can never finish what it started.
    let discarded = state.discard_staging(&device_id).await?;
    if discarded > 0 {
        info!(device_id = %device_id, discarded, "removed a revoked device's staging");
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
