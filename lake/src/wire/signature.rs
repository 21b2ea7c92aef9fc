//! RFC 9421 HTTP Message Signatures: the signature base and the
//! `Signature-Input` / `Signature` header syntax, for algorithm `ed25519`.
//!
//! Only what hexroad's devices use is supported: one signature labelled
//! `sig1`, components that are derived (`@method`, `@path`, `@query`,
//! `@authority`) or plain header names, and the parameters `created`,
//! `nonce`, `keyid` and `alg`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The label every hexroad device signs under.
pub const LABEL: &str = "sig1";
/// The only algorithm accepted.
pub const ALG: &str = "ed25519";

/// The signature parameters: which components are covered and the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureParams {
    pub components: Vec<String>,
    /// Unix seconds when the device signed.
    pub created: i64,
    /// A value the device never reuses; the server refuses a second use.
    pub nonce: String,
    /// The device id (hex public key).
    pub keyid: String,
    pub alg: String,
}

/// Why a signature header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(pub String);

impl SignatureParams {
    /// The serialized inner list with parameters, as it appears after
    /// `sig1=` in `Signature-Input` and in the `@signature-params` line.
    pub fn serialize(&self) -> String {
        let comps: Vec<String> = self.components.iter().map(|c| format!("\"{c}\"")).collect();
        format!(
            "({});created={};nonce=\"{}\";keyid=\"{}\";alg=\"{}\"",
            comps.join(" "),
            self.created,
            self.nonce,
            self.keyid,
            self.alg
        )
    }

    /// The `Signature-Input` header value.
    pub fn header_value(&self) -> String {
        format!("{LABEL}={}", self.serialize())
    }

    /// Reads the `sig1` member of a `Signature-Input` header.
    pub fn parse_header(value: &str) -> Result<Self, SyntaxError> {
        let member = value
            .split(',')
            .map(str::trim)
            .find_map(|m| m.strip_prefix(&format!("{LABEL}=")))
            .ok_or_else(|| SyntaxError(format!("Signature-Input has no {LABEL} member")))?;
        let rest = member
            .strip_prefix('(')
            .ok_or_else(|| SyntaxError("Signature-Input must start with an inner list".into()))?;
        let (list, params) = rest
            .split_once(')')
            .ok_or_else(|| SyntaxError("Signature-Input inner list is not closed".into()))?;
        let mut components = Vec::new();
        for item in list.split_whitespace() {
            let name = item
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .filter(|s| !s.is_empty() && !s.contains('"'))
                .ok_or_else(|| SyntaxError(format!("component {item} is not a quoted string")))?;
            components.push(name.to_ascii_lowercase());
        }
        let (mut created, mut nonce, mut keyid, mut alg) = (None, None, None, None);
        for param in params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, val) = param
                .split_once('=')
                .ok_or_else(|| SyntaxError(format!("parameter {param:?} has no value")))?;
            let unquote = || {
                val.strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .map(str::to_owned)
                    .ok_or_else(|| SyntaxError(format!("parameter {key} must be a quoted string")))
            };
            match key {
                "created" => {
                    created = Some(val.parse::<i64>().map_err(|_| {
                        SyntaxError(format!("created must be an integer, got {val:?}"))
                    })?)
                }
                "nonce" => nonce = Some(unquote()?),
                "keyid" => keyid = Some(unquote()?),
                "alg" => alg = Some(unquote()?),
                _ => {} // unknown parameters are covered by the signature anyway
            }
        }
        Ok(Self {
            components,
            created: created.ok_or_else(|| SyntaxError("created parameter is required".into()))?,
            nonce: nonce.ok_or_else(|| SyntaxError("nonce parameter is required".into()))?,
            keyid: keyid.ok_or_else(|| SyntaxError("keyid parameter is required".into()))?,
            alg: alg.unwrap_or_else(|| ALG.to_owned()),
        })
    }
}

/// The signature base (RFC 9421 §2.5): one line per covered component, then
/// the `@signature-params` line. `value` returns a component's value, or
/// `None` if the message lacks it (which makes the base unbuildable).
pub fn signature_base(
    params: &SignatureParams,
    mut value: impl FnMut(&str) -> Option<String>,
) -> Result<String, SyntaxError> {
    let mut base = String::new();
    for component in &params.components {
        let v = value(component)
            .ok_or_else(|| SyntaxError(format!("covered component {component:?} is missing")))?;
        if v.contains('\n') {
            return Err(SyntaxError(format!(
                "component {component:?} contains a newline"
            )));
        }
        base.push_str(&format!("\"{component}\": {}\n", v.trim()));
    }
    base.push_str(&format!("\"@signature-params\": {}", params.serialize()));
    Ok(base)
}

/// The `Signature` header value for signature bytes.
pub fn signature_header(signature: &[u8]) -> String {
    format!("{LABEL}=:{}:", STANDARD.encode(signature))
}

/// Reads the `sig1` member of a `Signature` header.
pub fn parse_signature_header(value: &str) -> Result<Vec<u8>, SyntaxError> {
    let member = value
        .split(',')
        .map(str::trim)
        .find_map(|m| m.strip_prefix(&format!("{LABEL}=")))
        .ok_or_else(|| SyntaxError(format!("Signature has no {LABEL} member")))?;
    let b64 = member
        .strip_prefix(':')
        .and_then(|m| m.strip_suffix(':'))
        .ok_or_else(|| SyntaxError("Signature must be a byte sequence (:base64:)".into()))?;
    STANDARD
        .decode(b64)
        .map_err(|e| SyntaxError(format!("Signature is not base64: {e}")))
}

/// RFC 9530 `Content-Digest` value for a body: `sha-256=:base64:`.
pub fn content_digest(sha256: &[u8]) -> String {
    format!("sha-256=:{}:", STANDARD.encode(sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SignatureParams {
        SignatureParams {
            components: vec!["@method".into(), "@path".into(), "content-digest".into()],
            created: 1_700_000_000,
            nonce: "n-1".into(),
            keyid: "ab".repeat(32),
            alg: ALG.into(),
        }
    }

    #[test]
    fn header_round_trips() {
        let p = params();
        assert_eq!(SignatureParams::parse_header(&p.header_value()).unwrap(), p);
    }

    #[test]
    fn base_follows_rfc_9421_layout() {
        let base = signature_base(&params(), |c| match c {
            "@method" => Some("POST".into()),
            "@path" => Some("/v1/devices".into()),
            "content-digest" => Some("sha-256=:AAAA:".into()),
            _ => None,
        })
        .unwrap();
        let expected = format!(
            "\"@method\": POST\n\"@path\": /v1/devices\n\"content-digest\": sha-256=:AAAA:\n\
             \"@signature-params\": (\"@method\" \"@path\" \"content-digest\");created=1700000000;\
             nonce=\"n-1\";keyid=\"{}\";alg=\"ed25519\"",
            "ab".repeat(32)
        );
        assert_eq!(base, expected);
    }

    #[test]
    fn missing_component_is_an_error() {
        assert!(signature_base(&params(), |_| None).is_err());
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert!(SignatureParams::parse_header("sig1=\"@method\"").is_err());
        assert!(SignatureParams::parse_header("sig2=(\"@method\");created=1").is_err());
        assert!(parse_signature_header("sig1=notbytes").is_err());
    }
}
