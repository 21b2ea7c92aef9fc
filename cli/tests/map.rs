//! The map end to end: `hexroad serve` fed by the simulated fleet serves
//! vector tiles that independent readers decode to what SQL reports, a
//! PMTiles export holding the same tiles, and a web map that headless
//! Chromium draws with coverage on it; new frames move the tiles on.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{hexroad, python, root, sim, succeed, wait_processed};

fn sql_to_file(data: &Path, query: &str, out: &Path) {
    let answer = succeed(
        hexroad(&["sql", "--format", "json", "--data"])
            .arg(data)
            .arg(query),
    );
    std::fs::write(out, answer.stdout).unwrap();
}

fn get(url: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let r = reqwest::get(url).await.unwrap();
        let status = r.status().as_u16();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        (status, headers, r.bytes().await.unwrap().to_vec())
    })
}

fn etag(url: &str) -> String {
    let (status, headers, _) = get(url);
    assert_eq!(status, 200, "{url}");
    headers
        .into_iter()
        .find(|(k, _)| k == "etag")
        .map(|(_, v)| v)
        .unwrap()
}

fn tiles_version(base: &str) -> u64 {
    let (_, _, body) = get(&format!("{base}/tiles.json"));
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    doc["version"].as_u64().unwrap()
}

/// Pixels of the coverage fill for imagery from today (#1a9850 at 75 %
/// over the page's #f4f2ee), within a tolerance for antialiasing.
fn fresh_coverage_pixels(png: &Path) -> usize {
    let img = image::open(png).unwrap().to_rgb8();
    let target = [80i32, 174, 119];
    img.pixels()
        .filter(|p| (0..3).all(|c| (i32::from(p[c]) - target[c]).abs() <= 24))
        .count()
}

#[test]
fn the_map_shows_what_sql_reports_exports_the_same_tiles_and_draws_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = common::serve(
        &data,
        "127.0.0.1:0",
        &[
            ("HEXROAD__VISION__POLL_INTERVAL", "200ms"),
            ("HEXROAD__TILES__POLL_INTERVAL", "200ms"),
        ],
    );
    sim(&server.base, &["--seed", "7", "--devices", "2"]);
    wait_processed(&data, Duration::from_secs(240));

    // Independent readers: the tiles against SQL and H3, the export against
    // the server.
    let coverage = dir.path().join("coverage.json");
    let frames = dir.path().join("frames.json");
    sql_to_file(
        &data,
        "SELECT cell, frames, contributors FROM coverage ORDER BY cell",
        &coverage,
    );
    sql_to_file(
        &data,
        "SELECT frame_id, lat, lon FROM frames WHERE image_key IS NOT NULL ORDER BY frame_id",
        &frames,
    );
    let archive = dir.path().join("map.pmtiles");
    let out = succeed(
        hexroad(&[
            "tiles",
            "export",
            "--minzoom",
            "10",
            "--maxzoom",
            "16",
            "--out",
        ])
        .arg(&archive)
        .arg("--data")
        .arg(&data),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote"));
    let out = succeed(
        Command::new(python())
            .arg(root().join("cli/tests/support/tiles_check.py"))
            .arg(&server.base)
            .arg(&coverage)
            .arg(&frames)
            .arg(&archive),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["whole_hexagons"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["archive_tiles"].as_u64().unwrap() >= 10, "{report}");

    // The web map in headless Chromium (Debian's), MapLibre from npm.
    let (status, _, page) = get(&format!("{}/", server.base));
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("/map/app.js"));
    let (status, _, _) = get(&format!("{}/map/maplibre-gl.mjs", server.base));
    assert_eq!(status, 200, "MapLibre is served (scripts/setup fetches it)");
    // Headless Chromium draws within a virtual-time budget that a loaded
    // machine can outrun before every tile is drawn: a second look, with
    // twice the budget, before the map is judged.
    let mut fresh = 0;
    for (attempt, budget) in [(1, 20_000), (2, 40_000)] {
        let screenshot = dir.path().join(format!("map-{attempt}.png"));
        let profile = dir.path().join(format!("chromium-{attempt}"));
        let shot = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader",
                "--window-size=800,600",
            ])
            .arg(format!("--virtual-time-budget={budget}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--screenshot={}", screenshot.display()))
            .arg(format!("{}/", server.base))
            .output()
            .expect("chromium (scripts/setup --test installs it)");
        assert!(
            shot.status.success() && screenshot.exists(),
            "{}",
            String::from_utf8_lossy(&shot.stderr)
        );
        fresh = fresh_coverage_pixels(&screenshot);
        if fresh > 2000 {
            break;
        }
    }
    assert!(fresh > 2000, "{fresh} pixels of fresh coverage on the map");

    // New frames: the tiles move on (the world tile at z0 always holds them).
    let world = format!("{}/tiles/0/0/0.mvt", server.base);
    let (before, version) = (etag(&world), tiles_version(&server.base));
    sim(&server.base, &["--seed", "8", "--devices", "1"]);
    wait_processed(&data, Duration::from_secs(240));
    let t0 = Instant::now();
    while tiles_version(&server.base) == version {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "tiles never moved on"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_ne!(etag(&world), before, "the world tile was drawn again");
}
