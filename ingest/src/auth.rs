//! Verifying RFC 9421 signatures from devices, and refusing replays.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, VerifyingKey};
use hexroad_wire::DeviceId;
use hexroad_wire::signature::{self, ReceivedSignature};

use crate::ApiError;

/// What a verified request proved.
#[derive(Debug, Clone)]
pub struct Verified {
    pub device: DeviceId,
    /// The signer's nonce, refused if it comes again within the window.
    pub nonce: String,
    /// Unix seconds when the device signed.
    pub created: i64,
}

/// The longest nonce held against replays.
pub const MAX_NONCE_BYTES: usize = 64;

/// The components every signed request must cover: `@authority` binds it
/// to this deployment.
const ALWAYS: [&str; 3] = ["@method", "@path", "@authority"];

/// What a request is checked against besides its own headers.
pub struct Expect<'a> {
    pub now: DateTime<Utc>,
    pub max_age_s: u64,
    pub skew_s: u64,
    /// The configured public `host[:port]`.
    pub authority: &'a str,
}

/// Verifies the signature on a request.
///
/// Any label is accepted (RFC 9421 leaves it to the signer); when a request
/// carries several signatures, the first one with a `keyid` is the device's.
/// `required` names the headers that must be covered: the one that binds
/// the body (`content-digest` for JSON bodies, `upload-checksum` for tus
/// chunks) and those that give the request its meaning.
/// Replays are *not* checked here: see [`NonceCache::admit`], which runs only
/// once the signature is known to be good.
pub fn verify(parts: &Parts, expect: &Expect, required: &[&str]) -> Result<Verified, ApiError> {
    let Expect {
        now,
        max_age_s,
        skew_s,
        authority,
    } = *expect;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(input), Some(sig)) = (header("signature-input"), header("signature")) else {
        return Err(ApiError::unauthorized(
            "unsigned",
            "this endpoint needs an RFC 9421 signature: send Signature-Input and Signature headers",
        ));
    };
    let bad = |msg: String| ApiError::unauthorized("bad_signature", msg);
    let received = signature::parse_signatures(input, sig).map_err(|e| bad(e.to_string()))?;
    let Some(chosen) = received.into_iter().find(|s| s.keyid.is_some()) else {
        return Err(bad(
            "no signature names its key: the keyid parameter (the device id) is required".into(),
        ));
    };
    let device = check_params(&chosen, required).map_err(bad)?;
    let (created, nonce) = (chosen.created.unwrap_or_default(), chosen.nonce.clone());
    check_age(now.timestamp(), created, chosen.expires, max_age_s, skew_s)?;
    let host = component(parts, "@authority").unwrap_or_default();
    if !hexroad_http::same_host(&host, authority) {
        return Err(ApiError::unauthorized(
            "wrong_authority",
            format!(
                "the request is addressed to {host:?}, but this service is {authority:?}: \
                 sign for the public address"
            ),
        ));
    }
    let key = VerifyingKey::from_bytes(&device.public_key())
        .map_err(|_| bad("keyid is not a valid ed25519 public key".into()))?;
    let base = chosen
        .base(|c| component(parts, c))
        .map_err(|e| bad(e.to_string()))?;
    let sig = Signature::from_slice(&chosen.signature).map_err(|_| {
        bad(format!(
            "signature {:?} is not a 64-byte ed25519 signature",
            chosen.label
        ))
    })?;
    key.verify_strict(base.as_bytes(), &sig).map_err(|_| {
        bad(format!(
            "signature {:?} does not verify against the keyid's public key",
            chosen.label
        ))
    })?;
    Ok(Verified {
        device,
        nonce: nonce.unwrap_or_default(),
        created,
    })
}

/// What hexroad asks of a signature beyond RFC 9421: ed25519, a device id
/// as `keyid`, `created` and `nonce` (replay refusal), and the components
/// that give the request its meaning.
fn check_params(sig: &ReceivedSignature, required: &[&str]) -> Result<DeviceId, String> {
    if let Some(alg) = sig.alg.as_deref().filter(|a| *a != signature::ALG) {
        return Err(format!("alg must be \"ed25519\", got {alg:?}"));
    }
    for needed in ALWAYS.iter().chain(required) {
        if !sig.components.iter().any(|c| c == needed) {
            return Err(format!("signature {:?} must cover \"{needed}\"", sig.label));
        }
    }
    if sig.created.is_none() {
        return Err("the created parameter is required".into());
    }
    if sig.nonce.as_deref().is_none_or(str::is_empty) {
        return Err("the nonce parameter is required (requests are refused if replayed)".into());
    }
    // Every nonce is held for the signature window: a stranger must not be
    // able to make each one cost the server kilobytes.
    if sig
        .nonce
        .as_deref()
        .is_some_and(|n| n.len() > MAX_NONCE_BYTES)
    {
        return Err(format!(
            "the nonce is longer than {MAX_NONCE_BYTES} bytes (a random 128-bit value needs 32)"
        ));
    }
    sig.keyid
        .as_deref()
        .unwrap_or_default()
        .parse()
        .map_err(|e: hexroad_wire::IdError| format!("keyid: {e}"))
}

/// Refuses a signature older than the limit, from too far in the future,
/// or past its own `expires`.
fn check_age(
    now_s: i64,
    created: i64,
    expires: Option<i64>,
    max_age_s: u64,
    skew_s: u64,
) -> Result<(), ApiError> {
    let skew = i64::try_from(skew_s).unwrap_or(i64::MAX);
    let age = now_s.saturating_sub(created);
    if age > i64::try_from(max_age_s).unwrap_or(i64::MAX) {
        return Err(ApiError::unauthorized(
            "stale_signature",
            format!("signature was created {age} s ago; the limit is {max_age_s} s"),
        ));
    }
    if age.saturating_neg() > skew {
        return Err(ApiError::unauthorized(
            "stale_signature",
            format!(
                "signature is created {} s in the future; the limit is {skew_s} s",
                age.saturating_neg()
            ),
        ));
    }
    if let Some(expires) = expires
        && now_s.saturating_sub(expires) > skew
    {
        return Err(ApiError::unauthorized(
            "stale_signature",
            format!("signature expired {} s ago", now_s.saturating_sub(expires)),
        ));
    }
    Ok(())
}

/// The value of one covered component in this request.
fn component(parts: &Parts, name: &str) -> Option<String> {
    match name {
        "@method" => Some(parts.method.as_str().to_owned()),
        "@path" => Some(parts.uri.path().to_owned()),
        "@query" => Some(format!("?{}", parts.uri.query().unwrap_or(""))),
        "@authority" => parts
            .uri
            .authority()
            .map(|a| a.as_str().to_ascii_lowercase())
            .or_else(|| {
                parts
                    .headers
                    .get("host")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_ascii_lowercase)
            }),
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
    /// Nonces held now.
    pub fn held(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .created
            .len()
    }

    /// Records the nonce, refusing one already used by this device, and
    /// refusing any (429) while `max_held` are held: memory stays bounded
    /// however many devices sign.
    pub fn admit(
        &self,
        v: &Verified,
        now: DateTime<Utc>,
        window_s: u64,
        max_held: usize,
    ) -> Result<(), ApiError> {
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
        let key = (v.device.clone(), v.nonce.clone());
        if map.contains_key(&key) {
            return Err(ApiError::unauthorized(
                "replayed",
                format!(
                    "nonce {:?} was already used: replayed requests are refused",
                    v.nonce
                ),
            ));
        }
        if map.len() >= max_held {
            let wait = order
                .front()
                .map_or(1, |(t, _, _)| t.saturating_sub(horizon).max(1));
            return Err(ApiError::too_many(
                "busy",
                format!("the server holds {max_held} recent nonces, its limit; retry later"),
                u64::try_from(wait).unwrap_or(1),
            ));
        }
        map.insert(key.clone(), v.created);
        order.push_back((now.timestamp(), key.0, key.1));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    /// Issue 14: `created` is the device's number; at the ends of `i64`
    /// the age arithmetic overflowed (a panic in a debug build) before the
    /// signature was even checked. Now it is a refusal.
    #[test]
    fn created_at_the_ends_of_i64_is_refused_not_a_panic() {
        for created in [i64::MIN, i64::MIN + 1, i64::MAX, i64::MAX - 1] {
            let e = check_age(NOW, created, None, 300, 120).unwrap_err();
            assert_eq!(e.code, "stale_signature");
        }
        for expires in [i64::MIN, i64::MAX] {
            let _ = check_age(NOW, NOW, Some(expires), 300, 120);
        }
        let _ = check_age(i64::MIN, i64::MAX, Some(i64::MIN), u64::MAX, u64::MAX);
    }

    /// Issue 14: a signature whose own `expires` passed long ago (2001) was
    /// accepted.
    #[test]
    fn a_signature_past_its_expires_is_refused() {
        let e = check_age(NOW, NOW, Some(1_000_000_000), 300, 120).unwrap_err();
        assert!(e.message.contains("expired"), "{}", e.message);
        assert!(check_age(NOW, NOW, Some(NOW + 60), 300, 120).is_ok());
    }
}
