//! Tiers in separate processes on one lake: `serve --role ingest` takes the
//! fleet's uploads, `serve --role vision,tiles,sql` turns them into frames,
//! a map and SQL, and learns of them only from the lake's commits.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{hexroad, sim, sql_u64, wait_processed};

const TOKEN: &str = "operators-token-for-the-roles-test";

/// A `hexroad serve --role …` process; killed when dropped.
struct Node {
    child: Child,
    base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(data: &Path, roles: &str, flight: &str) -> (Node, String) {
    let mut child = hexroad(&[
        "serve",
        "--role",
        roles,
        "--listen",
        "127.0.0.1:0",
        "--flight-listen",
        flight,
        "--data",
    ])
    .arg(data)
    .env("HEXROAD__SQL__TOKEN", TOKEN)
    .env("HEXROAD__VISION__POLL_INTERVAL", "200ms")
    .env("HEXROAD__TILES__POLL_INTERVAL", "200ms")
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let line = common::first_line(&mut child);
    let base = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|addr| format!("http://{addr}"))
        .unwrap_or_else(|| panic!("serve printed {line:?}"));
    (Node { child, base }, line)
}

fn status(method: reqwest::Method, url: &str) -> u16 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        reqwest::Client::new()
            .request(method, url)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

fn tiles_version(base: &str) -> u64 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let doc: serde_json::Value = reqwest::get(format!("{base}/tiles.json"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        doc["version"].as_u64().unwrap()
    })
}

fn sql_over_http(base: &str, query: &str) -> Vec<serde_json::Value> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{base}/v1/sql"))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .bearer_auth(TOKEN)
            .body(serde_json::json!({ "query": query }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    })
}

#[test]
fn tiers_in_separate_processes_share_one_lake_through_its_commits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (ingest, said) = node(&data, "ingest", "");
    assert!(said.contains("roles: ingest)"), "{said}");
    assert!(!said.contains("grpc://"), "{said}");
    let (rest, said) = node(&data, "vision,tiles,sql", "127.0.0.1:0");
    assert!(said.contains("roles: vision,tiles,sql)"), "{said}");
    assert!(said.contains("grpc://"), "{said}");

    // Each process serves its own tiers only.
    assert_eq!(
        status(reqwest::Method::GET, &format!("{}/healthz", ingest.base)),
        200
    );
    assert_eq!(
        status(reqwest::Method::GET, &format!("{}/healthz", rest.base)),
        200
    );
    assert_eq!(
        status(reqwest::Method::GET, &format!("{}/tiles.json", ingest.base)),
        404
    );
    assert_eq!(
        status(reqwest::Method::POST, &format!("{}/v1/sql", ingest.base)),
        404
    );
    assert_eq!(
        status(reqwest::Method::POST, &format!("{}/v1/devices", rest.base)),
        404
    );
    let before = tiles_version(&rest.base);

    sim(&ingest.base, &["--seed", "5", "--devices", "1"]);
    // The worker in the other process found the videos in the lake.
    wait_processed(&data, Duration::from_secs(240));
    let published = sql_u64(
        &data,
        "SELECT count(*) AS n FROM frames WHERE image_key IS NOT NULL",
    );
    assert!(published > 0, "no frames published");

    // The SQL tier answers what the lake holds, and the map moved on.
    let rows = sql_over_http(
        &rest.base,
        "SELECT count(*) AS n FROM frames WHERE image_key IS NOT NULL",
    );
    assert_eq!(rows[0]["n"].as_u64(), Some(published));
    let t0 = Instant::now();
    while tiles_version(&rest.base) == before {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the map never saw the new frames"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
