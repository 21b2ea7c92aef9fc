//! What every HTTP surface of hexroad (ingest, SQL, tiles) shares: one error
//! type, answered as `{"error": code, "message": …}`.
//!
//! Client mistakes carry a message naming the problem. Server faults carry a
//! fixed message; their cause goes to the log with its whole chain, never to
//! the client, so a stranger learns nothing about paths, tables or versions.

mod serve;

pub use serve::{ServeLimits, serve};

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The message every 5xx answer carries instead of its cause.
pub const INTERNAL_MESSAGE: &str = "the server failed to handle this request; it has been logged";

/// A failed request: a status, a stable machine-readable code and a message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable across releases: clients branch on it, not on the message.
    pub code: &'static str,
    pub message: String,
    /// Seconds, sent as `Retry-After` (429 and 503 answers).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 429 with `Retry-After` (at least one second).
    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }

    /// 503 with `Retry-After`: the server is busy, not broken.
    pub fn unavailable(code: &'static str, message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// A fault on our side: logged here with its cause, hidden from the client.
    pub fn internal(context: &str, cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(cause = %chain(cause), "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            INTERNAL_MESSAGE,
        )
    }

    /// The JSON body, for surfaces that answer errors in-band.
    pub fn body(&self) -> serde_json::Value {
        json!({ "error": self.code, "message": self.message })
    }
}

/// Any library error reaching a handler through `?` is our fault: a 500 whose
/// cause is logged. Client mistakes are built explicitly with their code.
impl<E: std::error::Error + 'static> From<E> for ApiError {
    fn from(e: E) -> Self {
        Self::internal("request failed", &e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// `cause: source: source…`, each printed once.
pub fn chain(cause: &(dyn std::error::Error + 'static)) -> String {
    let mut text = cause.to_string();
    let mut source = cause.source();
    while let Some(s) = source {
        let next = s.to_string();
        // Errors that print their source in their own message would repeat it.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// Whether `host` (a request's `Host`) names the server at `authority`: the
/// same text, or, for a loopback server, any loopback name on its port
/// (`localhost:8080` for `127.0.0.1:8080`). A name the attacker controls
/// (DNS rebinding) is never loopback by name.
pub fn same_host(host: &str, authority: &str) -> bool {
    if host.eq_ignore_ascii_case(authority) {
        return true;
    }
    let split = |a: &str| {
        a.rsplit_once(':')
            .filter(|(h, _)| !h.is_empty())
            .map(|(h, p)| (h.to_ascii_lowercase(), p.to_owned()))
    };
    let loopback = |h: &str| matches!(h, "localhost" | "127.0.0.1" | "[::1]");
    match (split(host), split(authority)) {
        (Some((h, p)), Some((ah, ap))) => p == ap && loopback(&h) && loopback(&ah),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_hides_its_cause() {
        let io = std::io::Error::other("/var/lib/hexroad/secret.parquet is gone");
        let e = ApiError::from(io);
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.code, "internal");
        assert!(!e.body().to_string().contains("secret"));
    }

    #[test]
    fn too_many_says_when_to_come_back() {
        let response = ApiError::too_many("rate_limited", "slow down", 0).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[derive(Debug)]
    struct Reading(std::io::Error, bool);

    impl std::fmt::Display for Reading {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            if self.1 {
                write!(f, "reading x: {}", self.0)
            } else {
                write!(f, "reading x")
            }
        }
    }

    impl std::error::Error for Reading {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_chain_prints_each_cause_once() {
        let quiet = Reading(std::io::Error::other("disk full"), false);
        assert_eq!(chain(&quiet), "reading x: disk full");
        let loud = Reading(std::io::Error::other("disk full"), true);
        assert_eq!(chain(&loud), "reading x: disk full");
    }

    #[test]
    fn loopback_names_are_one_host_but_other_names_are_not() {
        assert!(same_host("127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(same_host("localhost:8080", "127.0.0.1:8080"));
        assert!(same_host("LOCALHOST:8080", "[::1]:8080"));
        assert!(!same_host("localhost:9090", "127.0.0.1:8080"));
        assert!(!same_host("rebound.example:8080", "127.0.0.1:8080"));
        assert!(!same_host("localhost:8080", "map.example.org:8080"));
        assert!(!same_host("", "127.0.0.1:8080"));
    }
}
