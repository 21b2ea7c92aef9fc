//! The map's HTTP surface as an attacker sees it: answers that do not echo
//! what the client chose, and headers that keep the page from being framed
//! or sniffed.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use hexroad_lake::Lake;
use hexroad_tiles::{Tiles, TilesConfig};
use tower::ServiceExt;

async fn router(public_url: &str) -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(Lake::open(&dir.path().to_string_lossy()).await.unwrap());
    let config = TilesConfig {
        public_url: public_url.into(),
        ..TilesConfig::default()
    };
    let tiles = Arc::new(Tiles::new(lake, config).await.unwrap());
    (hexroad_tiles::http::router(tiles), dir)
}

/// Issue 14: TileJSON built its tile URLs from the Host header, so a
/// request with `Host: attacker.example` got tiles pointing there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tilejson_ignores_the_host_header() {
    let (app, _dir) = router("https://map.example.org/").await;
    let request = Request::get("/tiles.json")
        .header(header::HOST, "attacker.example")
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        doc["tiles"][0],
        "https://map.example.org/tiles/{z}/{x}/{y}.mvt"
    );
    assert!(!String::from_utf8_lossy(&body).contains("attacker"));
}

/// Issue 14: the web map and frames carried no security headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_cannot_be_framed_or_sniffed() {
    let (app, _dir) = router("http://127.0.0.1:8080").await;
    for path in ["/", "/tiles.json", "/frames/nope.jpg", "/tiles/0/0/0.mvt"] {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let h = response.headers();
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(
            h[header::CONTENT_SECURITY_POLICY],
            "frame-ancestors 'none'",
            "{path}"
        );
    }
}
