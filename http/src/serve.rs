//! Serving a router with the limits a public listener needs: a connection
//! cap, a deadline for the request head, and a deadline for the whole
//! request. axum's own `serve` has none of these (hyper's header timeout
//! needs a timer it does not set), so a client that sends its headers one
//! byte a minute would hold a connection forever.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hexroad_wire::settings::{SettingError, require};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;
use tracing::{debug, warn};

use crate::ApiError;

/// The limits on every connection to a public listener.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServeLimits {
    /// Time a client has to send a request's head (request line and
    /// headers), counted from when it starts one or from an idle keep-alive.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub header_read_timeout: Duration,
    /// Time one request may take from its head to the end of its answer,
    /// body included: a backstop under the per-service limits.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub request_timeout: Duration,
    /// Connections held at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long a graceful stop waits for requests in flight.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub drain_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30 * 60),
            max_connections: 4096,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl ServeLimits {
    /// Checks the settings, naming the first bad key.
    pub fn validate(&self) -> Result<(), SettingError> {
        require(
            self.header_read_timeout >= Duration::from_millis(100),
            "header_read_timeout",
            "must be at least 100ms",
        )?;
        require(
            self.request_timeout >= Duration::from_secs(1),
            "request_timeout",
            "must be at least a second",
        )?;
        require(
            self.max_connections > 0,
            "max_connections",
            "must be at least 1",
        )
    }
}

/// Serves `router` on `listener` until `stop` resolves, then stops
/// accepting, lets requests in flight finish (up to `drain_timeout`) and
/// returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (stopping, stop_seen) = watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        let permit = tokio::select! {
            () = &mut stop => break,
            permit = Arc::clone(&slots).acquire_owned() => permit,
        };
        let Ok(permit) = permit else { break };
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause, not die.
                    warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let mut stop_seen = stop_seen.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let router = router.clone();
                async move {
                    Ok::<_, Infallible>(answer(router, req, peer, limits.request_timeout).await)
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!(%peer, error = %e, "connection ended");
                    }
                }
                () = async { let _ = stop_seen.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    let _ = stopping.send(true);
    drop(listener);
    // Every connection holds a permit until it ends.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(limits.drain_timeout, slots.acquire_many(all)).await;
    if drained.is_err() {
        warn!("requests still in flight after the drain timeout; stopping anyway");
    }
    Ok(())
}

/// Runs one request through the router, answering 408 if it outlives the
/// request timeout (the handler is dropped, releasing what it held). The
/// peer's address rides along as axum's `ConnectInfo`.
async fn answer(
    router: Router,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
    limit: Duration,
) -> Response {
    let mut req = req.map(Body::new);
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(peer));
    match tokio::time::timeout(limit, router.oneshot(req)).await {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request took longer than the server's limit of {} s",
                limit.as_secs()
            ),
        )
        .into_response(),
    }
}
