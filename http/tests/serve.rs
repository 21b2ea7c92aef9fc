//! The public listener's limits, against a real socket on loopback.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use hexroad_http::{ServeLimits, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start(limits: ServeLimits) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let router = Router::new().route("/", get(|| async { "ok" })).route(
        "/slow",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "late"
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, router, limits, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Reads until the server closes the connection (or 20 s pass).
async fn read_to_close(stream: &mut TcpStream) -> (String, bool) {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut got))
        .await
        .is_ok();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

/// Issue 14: a client that sent its headers slowly held its connection
/// forever. Now the head has a deadline and the connection is closed.
#[tokio::test]
async fn slow_headers_are_cut_off() {
    let (addr, _stop) = start(ServeLimits {
        header_read_timeout: Duration::from_millis(500),
        ..ServeLimits::default()
    })
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (_, closed) = read_to_close(&mut stream).await;
    assert!(
        closed,
        "the server kept a connection whose headers never ended"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // An idle keep-alive connection is held no longer than a head would be.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (_, closed) = read_to_close(&mut stream).await;
    assert!(closed, "an idle connection was kept open");
}

/// Issue 14: no request had a deadline. Now one that outlives it is
/// answered 408 with the JSON error body.
#[tokio::test]
async fn a_request_past_its_deadline_is_answered_408() {
    let (addr, _stop) = start(ServeLimits {
        request_timeout: Duration::from_secs(1),
        ..ServeLimits::default()
    })
    .await;
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 408);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "request_timeout");
    // Others are still served.
    let ok = reqwest::get(format!("http://{addr}/")).await.unwrap();
    assert_eq!(ok.text().await.unwrap(), "ok");
}

/// Connections beyond the cap wait for a free one rather than being held
/// alongside; the one waiting is served once another ends.
#[tokio::test]
async fn connections_beyond_the_cap_wait_their_turn() {
    let (addr, _stop) = start(ServeLimits {
        max_connections: 1,
        header_read_timeout: Duration::from_secs(1),
        ..ServeLimits::default()
    })
    .await;
    // A silent connection takes the only slot until its head times out.
    let _silent = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let ok = reqwest::get(format!("http://{addr}/")).await.unwrap();
    assert_eq!(ok.text().await.unwrap(), "ok");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the second connection was served while the cap was taken"
    );
}

#[test]
fn limits_are_checked() {
    let bad = ServeLimits {
        max_connections: 0,
        ..ServeLimits::default()
    };
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("max_connections")
    );
    ServeLimits::default().validate().unwrap();
}
