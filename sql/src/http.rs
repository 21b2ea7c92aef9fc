//! `POST /v1/sql` on the HTTP port: one read-only query, answered as JSON,
//! CSV or Arrow IPC (stream) as the `Accept` header asks. Errors are JSON
//! `{"error": code, "message": …}` like every hexroad endpoint.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;

use hexroad_http::ApiError;
use hexroad_lake::{Error, Lake, OutputFormat, QueryLimits, Refusal, Role, render_batches_within};

/// Who may query, within what, and where queries run.
///
/// Two roles: a request without credentials is the public's and may name
/// the public views only (`hexroad_lake::PUBLIC_VIEWS`); one with the
/// operator's token may name every table. Whatever the listen address: a
/// reverse proxy in front makes every caller look local.
#[derive(Clone)]
pub struct SqlService {
    pub limits: QueryLimits,
    /// The operator's token. With none set, only the public role exists.
    pub token: Option<String>,
    /// Public aggregates over fewer frames than this are left out.
    pub public_min_count: u64,
    /// Shared by both transports: the concurrent-query limit is one limit.
    pub pool: crate::QueryPool,
    /// The server's public `host[:port]`: HTTP queries addressed to another
    /// host, or sent by another origin's page, are refused.
    pub authority: Option<String>,
}

impl SqlService {
    /// The role of a caller presenting `credentials` (the operator's token,
    /// or none): `None` when it presents something that is not the token.
    pub fn role(&self, credentials: Option<&str>) -> Option<Role> {
        match credentials {
            None => Some(Role::Public {
                min_count: self.public_min_count,
            }),
            Some(given) => self.token_matches(given).then_some(Role::Operator),
        }
    }

    /// Whether `given` is the operator's token (never, when none is set).
    pub fn token_matches(&self, given: &str) -> bool {
        let Some(token) = &self.token else {
            return false;
        };
        // Compared in full whatever the mismatch, so timing reveals nothing.
        given.len() == token.len()
            && given
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

struct Shared {
    lake: Arc<Lake>,
    service: SqlService,
}

#[derive(Deserialize)]
struct Body {
    query: String,
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// The SQL routes, to merge into a server's router.
pub fn router(lake: Arc<Lake>, service: SqlService) -> Router {
    let shared = Arc::new(Shared { lake, service });
    Router::new()
        .route("/v1/sql", post(query))
        .with_state(shared)
}

/// The caller's role: public without `Authorization`, operator with
/// `Bearer <the token>`, refused with anything else.
fn role_of(headers: &HeaderMap, service: &SqlService) -> Result<Role, ApiError> {
    let given = headers.get(header::AUTHORIZATION).map(|v| {
        v.to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
    });
    service.role(given).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authorization must be `Bearer <the server's sql.token>` (the operator's), \
             or absent for the public views",
        )
    })
}

async fn query(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let role = match role_of(&headers, &shared.service) {
        Ok(role) => role,
        Err(refused) => return refused.into_response(),
    };
    if let Err(refusal) = check_browser_headers(&headers, shared.service.authority.as_deref()) {
        return refusal.into_response();
    }
    // JSON only: a form or `text/plain` body is what another site's page
    // can send without asking, so it is never a query.
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "json_only",
            "POST /v1/sql takes Content-Type: application/json, {\"query\": \"SELECT …\"}",
        );
    }
    let query = match serde_json::from_slice::<Body>(&body) {
        Ok(b) => b.query,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the body must be {{\"query\": \"SELECT …\"}}: {e}"),
            );
        }
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let limits = &shared.service.limits;
    let output = match shared
        .service
        .pool
        .query(&shared.lake, &query, limits, role)
        .await
    {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return query_error(&e),
        Err(busy) => {
            return ApiError::too_many("too_many_queries", busy.to_string(), 1).into_response();
        }
    };
    if accept.contains("application/vnd.apache.arrow.stream") {
        let schema = Arc::clone(&output.schema);
        let mut buf = Vec::new();
        let written = (|| -> Result<(), hexroad_lake::arrow::error::ArrowError> {
            let mut w = hexroad_lake::arrow::ipc::writer::StreamWriter::try_new(&mut buf, &schema)?;
            for b in &output.batches {
                w.write(b)?;
            }
            w.finish()
        })();
        return match written {
            Ok(()) => (
                [(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")],
                buf,
            )
                .into_response(),
            Err(e) => ApiError::internal("POST /v1/sql: encoding Arrow IPC", &e).into_response(),
        };
    }
    let (format, content_type) = if accept.contains("text/csv") {
        (OutputFormat::Csv, "text/csv")
    } else {
        (OutputFormat::Json, "application/json")
    };
    match render_batches_within(&output.batches, format, limits.max_result_bytes) {
        Err(e @ Error::ResultTooLarge { .. }) => query_error(&e),
        Ok(text) => ([(header::CONTENT_TYPE, content_type)], text).into_response(),
        Err(e) => ApiError::internal("POST /v1/sql: rendering the answer", &e).into_response(),
    }
}

/// Refuses a request addressed to another host (DNS rebinding: a name the
/// attacker controls pointed at this server) or sent from another site's
/// page (`Origin`). `authority` is the server's public `host[:port]`; with
/// none configured only the Origin check applies.
fn check_browser_headers(headers: &HeaderMap, authority: Option<&str>) -> Result<(), ApiError> {
    let Some(authority) = authority else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !hexroad_http::same_host(host, authority) {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "wrong_host",
            format!("this server answers SQL for {authority:?}, not {host:?}"),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let same = origin
            .split_once("://")
            .is_some_and(|(_, rest)| hexroad_http::same_host(rest, authority));
        if !same {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "foreign_origin",
                format!("queries from pages of {origin:?} are refused"),
            ));
        }
    }
    Ok(())
}

fn query_error(e: &Error) -> Response {
    let refusal = e.refusal();
    let status = match refusal {
        Refusal::ReadOnly => StatusCode::FORBIDDEN,
        Refusal::Timeout => StatusCode::REQUEST_TIMEOUT,
        Refusal::MemoryLimit | Refusal::ResultTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Refusal::BadQuery => StatusCode::BAD_REQUEST,
        Refusal::Internal => return ApiError::internal("POST /v1/sql", e).into_response(),
    };
    error(status, refusal.code(), e.full_message())
}
