//! Privacy zones: `POST /v1/privacy-zones` declares an area (a home, a
//! workplace) where nothing of the device's contributor is published,
//! `GET` lists them, `DELETE /v1/privacy-zones/{id}` withdraws one. Each is
//! signed by a device of that contributor. A zone hides what was already
//! published there too: the map forgets its tiles and stops serving those
//! images at its next look.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use hexroad_lake::PrivacyZone;
use serde::Deserialize;
use tracing::info;

use crate::ApiError;
use crate::app::Ingest;
use crate::extract::{Bodiless, JsonBody, SignedDevice, bounded_body};

/// The smallest zone: a GNSS fix's error must not let a home show.
pub const MIN_ZONE_RADIUS_M: f64 = 50.0;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Declaration {
    lat: f64,
    lon: f64,
    radius_m: f64,
}

fn zone_json(z: &PrivacyZone) -> serde_json::Value {
    serde_json::json!({
        "zone_id": z.zone_id.hyphenated().to_string(),
        "lat": z.lat,
        "lon": z.lon,
        "radius_m": z.radius_m,
        "declared_by": z.device_id,
        "changed_at": z.changed_at,
    })
}

pub async fn declare(
    State(state): State<Arc<Ingest>>,
    device: SignedDevice<JsonBody>,
    parts: Parts,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let body = bounded_body(body, state.config.max_json_bytes, "privacy zone").await?;
    crate::devices::check_content_digest(&parts, &body)?;
    let d: Declaration = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("bad_body", format!("privacy zone body: {e}")))?;
    let max = state.config.max_zone_radius_m;
    let on_globe = (-90.0..=90.0).contains(&d.lat) && (-180.0..=180.0).contains(&d.lon);
    if !on_globe {
        return Err(ApiError::bad_request(
            "bad_zone",
            format!(
                "lat and lon must be degrees on the globe, got {}, {}",
                d.lat, d.lon
            ),
        ));
    }
    if !(d.radius_m.is_finite() && (MIN_ZONE_RADIUS_M..=max).contains(&d.radius_m)) {
        return Err(ApiError::bad_request(
            "bad_zone",
            format!(
                "radius_m must be {MIN_ZONE_RADIUS_M} to {max} metres, got {}",
                d.radius_m
            ),
        ));
    }
    let record = device.record;
    let _one_at_a_time = state.registration.lock().await;
    let held = state
        .lake
        .privacy_zones()
        .await?
        .into_iter()
        .filter(|z| z.active && z.contributor_id == record.contributor_id)
        .count();
    if held >= state.config.max_privacy_zones {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_zones",
            format!(
                "contributor {} already has {held} privacy zones, the most allowed: withdraw one first",
                record.contributor_id
            ),
        ));
    }
    let zone = PrivacyZone {
        zone_id: uuid::Uuid::new_v4(),
        contributor_id: record.contributor_id.clone(),
        device_id: record.device_id.clone(),
        lat: d.lat,
        lon: d.lon,
        radius_m: d.radius_m,
        active: true,
        changed_at: (state.clock)(),
    };
    state.lake.record_privacy_zone(&zone).await?;
    state.lake.note_hidden_change().await?;
    info!(zone_id = %zone.zone_id, contributor_id = %zone.contributor_id, "privacy zone declared");
    Ok((StatusCode::CREATED, axum::Json(zone_json(&zone))).into_response())
}

pub async fn list(
    State(state): State<Arc<Ingest>>,
    device: SignedDevice<Bodiless>,
) -> Result<Response, ApiError> {
    let contributor = device.record.contributor_id;
    let zones: Vec<serde_json::Value> = state
        .lake
        .privacy_zones()
        .await?
        .iter()
        .filter(|z| z.active && z.contributor_id == contributor)
        .map(zone_json)
        .collect();
    Ok(axum::Json(serde_json::json!({ "zones": zones })).into_response())
}

pub async fn withdraw(
    State(state): State<Arc<Ingest>>,
    Path(id): Path<String>,
    device: SignedDevice<Bodiless>,
) -> Result<Response, ApiError> {
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| ApiError::not_found(format!("no privacy zone {id:?}")))?;
    let _one_at_a_time = state.registration.lock().await;
    let zone = state
        .lake
        .privacy_zones()
        .await?
        .into_iter()
        .find(|z| z.zone_id == id && z.active);
    // Another contributor's zone is answered as absent: its existence is
    // private too.
    let Some(mut zone) = zone.filter(|z| z.contributor_id == device.record.contributor_id) else {
        return Err(ApiError::not_found(format!("no privacy zone {id}")));
    };
    zone.active = false;
    zone.device_id = device.record.device_id;
    zone.changed_at = (state.clock)();
    state.lake.record_privacy_zone(&zone).await?;
    state.lake.note_hidden_change().await?;
    info!(zone_id = %zone.zone_id, "privacy zone withdrawn");
    Ok(StatusCode::NO_CONTENT.into_response())
}
