//! What handlers take from a request before they run: the signed device and
//! the tus headers, each checked once here, in one place, as axum extractors.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use hexroad_lake::DeviceRecord;

use crate::ApiError;
use crate::app::Ingest;
use crate::auth::Verified;
use crate::tus_headers::{ChunkChecksum, TusHeaderError, parse_metadata};

/// The headers a request's signature must cover, beyond `@method` and
/// `@path`: those that bind its body and give it its meaning.
pub trait Covers: Send + Sync + 'static {
    const COMPONENTS: &'static [&'static str];
}

/// Requests without a body (HEAD, DELETE).
pub struct Bodiless;
impl Covers for Bodiless {
    const COMPONENTS: &'static [&'static str] = &[];
}

/// A JSON body, bound by its `Content-Digest`.
pub struct JsonBody;
impl Covers for JsonBody {
    const COMPONENTS: &'static [&'static str] = &["content-digest"];
}

/// tus creation: what is being uploaded and how long it is.
pub struct Creation;
impl Covers for Creation {
    const COMPONENTS: &'static [&'static str] = &["upload-length", "upload-metadata"];
}

/// A tus chunk: where it goes and what its bytes hash to.
pub struct Chunk;
impl Covers for Chunk {
    const COMPONENTS: &'static [&'static str] = &["upload-offset", "upload-checksum"];
}

/// A request with a good signature covering `C`, from any key. Its nonce is
/// not yet spent: the handler spends it once the body is checked.
pub struct Signed<C> {
    pub verified: Verified,
    covers: PhantomData<C>,
}

impl<C: Covers> FromRequestParts<Arc<Ingest>> for Signed<C> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<Ingest>) -> Result<Self, ApiError> {
        Ok(Self {
            verified: state.verify(parts, C::COMPONENTS)?,
            covers: PhantomData,
        })
    }
}

/// A registered, active device whose signature covers `C`; its nonce is
/// spent and its request charged to its rate limit.
pub struct SignedDevice<C> {
    pub record: DeviceRecord,
    covers: PhantomData<C>,
}

impl<C: Covers> FromRequestParts<Arc<Ingest>> for SignedDevice<C> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<Ingest>) -> Result<Self, ApiError> {
        Ok(Self {
            record: state.authenticate(parts, C::COMPONENTS).await?,
            covers: PhantomData,
        })
    }
}

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `Tus-Resumable: 1.0.0`, which tus requires on every request but OPTIONS.
pub struct TusResumable;

impl<S: Send + Sync> FromRequestParts<S> for TusResumable {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match header_str(&parts.headers, "tus-resumable") {
            Some("1.0.0") => Ok(Self),
            other => Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "tus_version",
                format!("Tus-Resumable must be 1.0.0, got {other:?}"),
            )),
        }
    }
}

/// The headers of a tus creation request: `Upload-Length` and the decoded
/// `Upload-Metadata` pairs.
pub struct CreationHeaders {
    pub length: u64,
    pub metadata: HashMap<String, String>,
}

impl<S: Send + Sync> FromRequestParts<S> for CreationHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let length = header_str(&parts.headers, "upload-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "bad_upload_length",
                    "Upload-Length must be a non-negative integer",
                )
            })?;
        let metadata =
            parse_metadata(header_str(&parts.headers, "upload-metadata").unwrap_or_default())
                .map_err(|e| ApiError::bad_request("bad_metadata", e.to_string()))?;
        Ok(Self { length, metadata })
    }
}

/// The headers of a tus `PATCH`: its content type, `Upload-Offset` and
/// `Upload-Checksum`.
pub struct ChunkHeaders {
    pub offset: u64,
    pub checksum: ChunkChecksum,
}

impl<S: Send + Sync> FromRequestParts<S> for ChunkHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        if header_str(&parts.headers, "content-type") != Some("application/offset+octet-stream") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "bad_content_type",
                "PATCH bodies must be Content-Type: application/offset+octet-stream",
            ));
        }
        let offset = header_str(&parts.headers, "upload-offset")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "bad_upload_offset",
                    "Upload-Offset must be a non-negative integer",
                )
            })?;
        let value = header_str(&parts.headers, "upload-checksum").unwrap_or_default();
        let checksum = ChunkChecksum::parse(value).map_err(|e| {
            let code = match e {
                TusHeaderError::ChecksumAlgorithm { .. } => "unsupported_checksum",
                _ => "bad_checksum",
            };
            ApiError::bad_request(code, e.to_string())
        })?;
        Ok(Self { offset, checksum })
    }
}

/// A JSON request body, read up to `limit` bytes; past it, 413 naming
/// `what` ("registration", "privacy zone", …).
pub async fn bounded_body(
    body: axum::body::Body,
    limit: usize,
    what: &str,
) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("{what} bodies are limited to {limit} bytes"),
        )
    })
}

/// The peer's address, as `hexroad_http::serve` attaches it; `None` when
/// the router runs without it (a test calling it in-process).
pub fn peer_address(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}
