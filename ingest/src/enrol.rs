//! Who may join. In `attested` registration a device's key must carry a
//! trusted manufacturer's signature (over the key and its serial), and a
//! contributor is an account with its own key: a device joins it only with
//! that key's signature, so nobody can add devices to someone else's
//! account. In `open` registration (private deployments, the quick start)
//! both proofs are optional, but an account that has a key still accepts
//! only devices it signed for. `POST /v1/contributors/{id}/key` rotates an
//! account's key, signed by the key in force.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use hexroad_lake::ContributorKey;
use hexroad_wire::enrol::{
    attestation_message, binding_message, public_key_from_hex, public_key_hex, rotation_message,
    valid_serial,
};
use hexroad_wire::{ContributorId, DeviceId};
use serde::Deserialize;
use tracing::info;

use crate::ApiError;
use crate::app::Ingest;
use crate::config::RegistrationMode;
use crate::extract::{bounded_body, peer_address};

/// A manufacturer's signature over the device key and its serial.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Attestation {
    /// The name under `ingest.manufacturers`.
    manufacturer: String,
    serial: String,
    /// Base64 of the ed25519 signature over `attestation_message`.
    signature: String,
}

/// The contributor's signature adding this device to its account.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Binding {
    /// Hex of the account's ed25519 public key.
    contributor_key: String,
    /// Base64 of the ed25519 signature over `binding_message`.
    signature: String,
}

/// What vouched for a registration, once checked.
#[derive(Debug)]
pub(crate) struct Vouched {
    pub manufacturer: Option<String>,
    pub serial: Option<String>,
    pub bound: bool,
    /// An account created by this registration's binding.
    pub new_account: Option<ContributorKey>,
}

fn verify(key: &[u8; 32], message: &[u8], signature: &str) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(key) else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(signature) else {
        return false;
    };
    let Ok(sig) = Signature::from_slice(&bytes) else {
        return false;
    };
    key.verify_strict(message, &sig).is_ok()
}

/// Checks the proofs a new device's registration carries against the
/// registration mode and the contributor's account.
pub(crate) async fn vouch(
    state: &Ingest,
    device: &DeviceId,
    contributor: &ContributorId,
    attestation: Option<&Attestation>,
    binding: Option<&Binding>,
) -> Result<Vouched, ApiError> {
    let attested = state.config.registration == RegistrationMode::Attested;
    let (manufacturer, serial) = match attestation {
        Some(a) => {
            let key = state
                .config
                .manufacturers
                .get(&a.manufacturer)
                .and_then(|k| public_key_from_hex(k))
                .ok_or_else(|| {
                    ApiError::forbidden(
                        "unknown_manufacturer",
                        format!(
                            "{:?} is not a manufacturer this network trusts",
                            a.manufacturer
                        ),
                    )
                })?;
            if !valid_serial(&a.serial) {
                return Err(ApiError::bad_request(
                    "bad_attestation",
                    "serial must be 1-64 printable ASCII characters without spaces",
                ));
            }
            if !verify(&key, &attestation_message(device, &a.serial), &a.signature) {
                return Err(ApiError::forbidden(
                    "bad_attestation",
                    format!(
                        "the attestation is not {:?}'s signature over this key and serial",
                        a.manufacturer
                    ),
                ));
            }
            (Some(a.manufacturer.clone()), Some(a.serial.clone()))
        }
        None if attested => {
            return Err(ApiError::forbidden(
                "attestation_required",
                "this network admits only devices attested by a trusted manufacturer: \
                 the registration needs {\"attestation\": {\"manufacturer\", \"serial\", \"signature\"}}",
            ));
        }
        None => (None, None),
    };
    let account = state.lake.contributor_key(contributor).await?;
    let Some(binding) = binding else {
        if attested || account.is_some() {
            return Err(ApiError::forbidden(
                "binding_required",
                format!(
                    "a device joins contributor {contributor} only with the contributor's \
                     signature: {{\"binding\": {{\"contributor_key\", \"signature\"}}}}"
                ),
            ));
        }
        return Ok(Vouched {
            manufacturer,
            serial,
            bound: false,
            new_account: None,
        });
    };
    let key = public_key_from_hex(&binding.contributor_key).ok_or_else(|| {
        ApiError::bad_request(
            "bad_binding",
            "contributor_key must be 64 lowercase hex digits (an ed25519 public key)",
        )
    })?;
    if account.as_ref().is_some_and(|a| a.public_key != key) {
        return Err(ApiError::forbidden(
            "bad_binding",
            format!("contributor {contributor}'s account has another key"),
        ));
    }
    if !verify(
        &key,
        &binding_message(contributor, device),
        &binding.signature,
    ) {
        return Err(ApiError::forbidden(
            "bad_binding",
            "the binding is not the contributor key's signature over this contributor and device",
        ));
    }
    let new_account = account.is_none().then(|| ContributorKey {
        contributor_id: contributor.clone(),
        public_key: key,
        changed_at: (state.clock)(),
    });
    Ok(Vouched {
        manufacturer,
        serial,
        bound: true,
        new_account,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotation {
    public_key: String,
    signature: String,
}

/// `POST /v1/contributors/{id}/key`: the account's key hands over to a new
/// one. Signed by the key in force (in the body), so no device can do it.
pub async fn rotate_key(
    State(state): State<Arc<Ingest>>,
    Path(id): Path<String>,
    parts: Parts,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let body = bounded_body(body, state.config.max_json_bytes, "key rotation").await?;
    let contributor: ContributorId = id.parse().map_err(|e: hexroad_wire::IdError| {
        ApiError::bad_request("bad_contributor_id", e.to_string())
    })?;
    state.limits.take_registration_from(
        peer_address(&parts),
        &contributor,
        std::time::Instant::now(),
    )?;
    let rotation: Rotation = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("bad_body", format!("key rotation body: {e}")))?;
    let new_key = public_key_from_hex(&rotation.public_key).ok_or_else(|| {
        ApiError::bad_request(
            "bad_public_key",
            "public_key must be 64 lowercase hex digits (an ed25519 public key)",
        )
    })?;
    let _one_at_a_time = state.registration.lock().await;
    let Some(account) = state.lake.contributor_key(&contributor).await? else {
        return Err(ApiError::not_found(format!(
            "contributor {contributor} has no account key to rotate"
        )));
    };
    if account.public_key == new_key {
        return Err(ApiError::bad_request(
            "bad_public_key",
            "the new key is the key in force",
        ));
    }
    let message = rotation_message(
        &contributor,
        &public_key_hex(&account.public_key),
        &rotation.public_key,
    );
    if !verify(&account.public_key, &message, &rotation.signature) {
        return Err(ApiError::forbidden(
            "bad_rotation",
            "the rotation is not signed by the account's key in force",
        ));
    }
    let key = ContributorKey {
        contributor_id: contributor.clone(),
        public_key: new_key,
        changed_at: (state.clock)(),
    };
    state.lake.record_contributor_key(&key).await?;
    info!(contributor_id = %contributor, "contributor key rotated");
    Ok((
        StatusCode::OK,
        axum::Json(serde_json::json!({
            "contributor_id": contributor,
            "public_key": rotation.public_key,
        })),
    )
        .into_response())
}
