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
    let (app, _, dir) = service(TilesConfig {
        public_url: public_url.into(),
        ..TilesConfig::default()
    })
    .await;
    (app, dir)
}

async fn service(config: TilesConfig) -> (axum::Router, Arc<Tiles>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(Lake::open(&dir.path().to_string_lossy()).await.unwrap());
    let tiles = Arc::new(Tiles::new(lake, config).await.unwrap());
    (hexroad_tiles::http::router(Arc::clone(&tiles)), tiles, dir)
}

async fn get(app: &axum::Router, path: &str) -> axum::response::Response {
    let request = Request::get(path).body(Body::empty()).unwrap();
    app.clone().oneshot(request).await.unwrap()
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
        let policy = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
        assert!(policy.starts_with("default-src 'none'"), "{path}: {policy}");
    }
}

/// Issue 14: the page ran an inline script, so its policy could not refuse
/// injected ones. The script is a file now and the policy allows scripts
/// from this origin only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_runs_no_inline_script() {
    let (app, _dir) = router("http://127.0.0.1:8080").await;
    let page = get(&app, "/").await;
    let policy = page.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("script-src 'self';"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    assert!(policy.contains("worker-src 'self' blob:"), "{policy}");
    let html = axum::body::to_bytes(page.into_body(), 1 << 20)
        .await
        .unwrap();
    let html = String::from_utf8_lossy(&html);
    for tag in html.split("<script").skip(1) {
        let open = &tag[..tag.find('>').unwrap()];
        assert!(open.contains("src="), "an inline script: <script{open}>");
    }
    assert!(!html.contains("<style"), "an inline style");
    let script = get(&app, "/map/app.js").await;
    assert_eq!(script.status(), StatusCode::OK);
    assert_eq!(script.headers()[header::CONTENT_TYPE], "text/javascript");
}

/// Issue 14: nothing stopped many clients asking for one cold tile from
/// rendering it once each. Now concurrent asks share one render.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cold_tile_asked_for_at_once_renders_once() {
    let (app, tiles, _dir) = service(TilesConfig::default()).await;
    let asks = (0..16).map(|_| get(&app, "/tiles/12/2331/1185.mvt"));
    let answers = futures::future::join_all(asks).await;
    let etags: std::collections::HashSet<_> = answers
        .iter()
        .map(|r| {
            assert_eq!(r.status(), StatusCode::OK);
            r.headers()[header::ETAG].clone()
        })
        .collect();
    assert_eq!(etags.len(), 1);
    assert_eq!(tiles.rendered(), 1);
}

/// Issue 14: 300 distinct cold tiles took 38 s and nothing bounded how many
/// renders an anonymous client could force. Past the render and queue
/// limits the answer is 503 with Retry-After, never a wait without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_renders_past_the_queue_are_refused() {
    let (app, tiles, _dir) = service(TilesConfig {
        max_concurrent_renders: 1,
        max_queued_renders: 0,
        ..TilesConfig::default()
    })
    .await;
    let asks = (0..48).map(|x| {
        let app = app.clone();
        tokio::spawn(async move { get(&app, &format!("/tiles/14/{x}/100.mvt")).await })
    });
    let mut busy = 0;
    for answer in futures::future::join_all(asks).await {
        let answer = answer.unwrap();
        match answer.status() {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(answer.headers().contains_key(header::RETRY_AFTER));
                busy += 1;
            }
            other => panic!("{other}"),
        }
    }
    assert!(
        busy > 0,
        "48 cold tiles at once, one render allowed, none refused"
    );
    assert_eq!(tiles.rendered(), 48 - busy);
}

/// Issue 14: an unknown frame id scanned the frames table (≈130 ms each,
/// growing with the table). The image key comes from the id now: with the
/// frames table gone, an unknown id is still a plain 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_frame_reads_no_table() {
    let (app, _tiles, dir) = service(TilesConfig::default()).await;
    std::fs::remove_dir_all(dir.path().join("tables/frames")).unwrap();
    let id = hexroad_wire::FrameId::from_bytes([7; 16]);
    let answer = get(&app, &format!("/frames/{id}.jpg")).await;
    assert_eq!(answer.status(), StatusCode::NOT_FOUND);
}
