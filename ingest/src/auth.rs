//! Verifying RFC 9421 signatures from devices, and refusing replays.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, VerifyingKey};
use hexroad_lake::DeviceId;
use hexroad_lake::wire::signature::{self, SignatureParams};

use crate::ApiError;

/// What a verified request proved.
#[derive(Debug, Clone)]
pub struct Verified {
    pub device: DeviceId,
    pub params: SignatureParams,
}

/// The components every signed request must cover.
const ALWAYS: [&str; 2] = ["@method", "@path"];

/// Verifies the signature on a request.
///
/// `body_covered_by` names the header that binds the body (`content-digest`
/// for JSON bodies, `upload-checksum` for tus chunks); it must be covered.
/// Replays are *not* checked here: see [`NonceCache::admit`], which runs only
/// once the signature is known to be good.
pub fn verify(
    parts: &Parts,
    now: DateTime<Utc>,
    max_age_s: u64,
    skew_s: u64,
    required: &[&str],
) -> Result<Verified, ApiError> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(input), Some(sig)) = (header("signature-input"), header("signature")) else {
        return Err(ApiError::unauthorized(
            "unsigned",
            "this endpoint needs an RFC 9421 signature: send Signature-Input and Signature headers",
        ));
    };
    let bad = |msg: String| ApiError::unauthorized("bad_signature", msg);
    let params = SignatureParams::parse_header(input).map_err(|e| bad(e.0))?;
    if params.alg != signature::ALG {
        return Err(bad(format!(
            "alg must be \"ed25519\", got {:?}",
            params.alg
        )));
    }
    for needed in ALWAYS.iter().chain(required) {
        if !params.components.iter().any(|c| c == needed) {
            return Err(bad(format!("the signature must cover \"{needed}\"")));
        }
    }
    let now_s = now.timestamp();
    let age = now_s - params.created;
    if age > i64::try_from(max_age_s).unwrap_or(i64::MAX) {
        return Err(ApiError::unauthorized(
            "stale_signature",
            format!("signature was created {age} s ago; the limit is {max_age_s} s"),
        ));
    }
    if -age > i64::try_from(skew_s).unwrap_or(i64::MAX) {
        return Err(ApiError::unauthorized(
            "stale_signature",
            format!(
                "signature is created {} s in the future; the limit is {skew_s} s",
                -age
            ),
        ));
    }
    let device: DeviceId = params.keyid.parse().map_err(bad)?;
    let key = VerifyingKey::from_bytes(&device.public_key())
        .map_err(|_| bad("keyid is not a valid ed25519 public key".into()))?;
    let base = signature::signature_base(&params, |c| component(parts, c)).map_err(|e| bad(e.0))?;
    let sig_bytes = signature::parse_signature_header(sig).map_err(|e| bad(e.0))?;
    let sig = Signature::from_slice(&sig_bytes)
        .map_err(|_| bad("Signature is not a 64-byte ed25519 signature".into()))?;
    key.verify_strict(base.as_bytes(), &sig)
        .map_err(|_| bad("signature does not verify against the keyid's public key".into()))?;
    Ok(Verified { device, params })
}

/// The value of one covered component in this request.
fn component(parts: &Parts, name: &str) -> Option<String> {
    match name {
        "@method" => Some(parts.method.as_str().to_owned()),
        "@path" => Some(parts.uri.path().to_owned()),
        "@query" => Some(format!("?{}", parts.uri.query().unwrap_or(""))),
        "@authority" => parts
            .headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase),
        n if n.starts_with('@') => None,
        n => {
            let values: Vec<&str> = parts
                .headers
                .get_all(n)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::trim)
                .collect();
            (!values.is_empty()).then(|| values.join(", "))
        }
    }
}

/// Nonces seen within the signature window, per device.
///
/// Held in memory: after a restart the `created` window alone bounds what an
/// attacker could replay (a request already acknowledged is idempotent).
#[derive(Default)]
pub struct NonceCache {
    seen: Mutex<SeenNonces>,
}

/// Nonces by device, and the order they arrived in so old ones expire.
#[derive(Default)]
struct SeenNonces {
    created: HashMap<(DeviceId, String), i64>,
    arrival: VecDeque<(i64, DeviceId, String)>,
}

impl NonceCache {
    /// Records the nonce, refusing one already used by this device.
    pub fn admit(&self, v: &Verified, now: DateTime<Utc>, window_s: u64) -> Result<(), ApiError> {
        let mut guard = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let SeenNonces {
            created: map,
            arrival: order,
        } = &mut *guard;
        let horizon = now.timestamp() - i64::try_from(window_s).unwrap_or(i64::MAX);
        while let Some((t, _, _)) = order.front() {
            if *t >= horizon {
                break;
            }
            if let Some((_, d, n)) = order.pop_front() {
                map.remove(&(d, n));
            }
        }
        let key = (v.device.clone(), v.params.nonce.clone());
        if map.contains_key(&key) {
            return Err(ApiError::unauthorized(
                "replayed",
                format!(
                    "nonce {:?} was already used: replayed requests are refused",
                    v.params.nonce
                ),
            ));
        }
        map.insert(key.clone(), v.params.created);
        order.push_back((now.timestamp(), key.0, key.1));
        Ok(())
    }
}
