//! Issue 15 end to end: the simulated fleet joins a network in attested
//! registration (the sim plays the manufacturer and each contributor), an
//! unattested fleet is refused, and with a privacy radius no public answer
//! holds a frame near where a drive began or ended.

use std::time::Duration;

use serde_json::Value;

mod common;
use common::{hexroad, sql, sql_u64, succeed, wait_processed};

/// Distance in metres between two (lat, lon) points.
fn metres(a: (f64, f64), b: (f64, f64)) -> f64 {
    hexroad_wire::grid::haversine_m(a, b)
}

#[test]
fn the_sim_joins_an_attested_network_and_drive_ends_stay_private() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("maker.key");
    let made = succeed(hexroad(&["keys", "new", "--out"]).arg(&key));
    let public = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    assert_eq!(public.len(), 64);
    let again = hexroad(&["keys", "new", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!again.status.success(), "a key file is never overwritten");

    let manufacturers = format!("{{ sim = \"{public}\" }}");
    let server = common::serve(
        &data,
        "127.0.0.1:0",
        &[
            ("HEXROAD__VISION__POLL_INTERVAL", "200ms"),
            ("HEXROAD__INGEST__REGISTRATION", "attested"),
            ("HEXROAD__INGEST__MANUFACTURERS", &manufacturers),
            ("HEXROAD__PRIVACY__RADIUS_M", "60"),
        ],
    );

    // Without the manufacturer's attestation the fleet cannot join.
    let refused = hexroad(&[
        "sim",
        "--server",
        &server.base,
        "--json",
        "--video",
        "320x240@5",
        "--duration",
        "60s",
        "--seed",
        "3",
        "--devices",
        "1",
    ])
    .env("RUST_LOG", "warn")
    .output()
    .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("attestation_required"), "{stderr}");
    assert_eq!(sql_u64(&data, "SELECT count(*) FROM devices"), 0);

    let manufacturer = format!("sim={}", key.display());
    // The sim names a drive per one-minute segment (`drive_id`), so each
    // segment's track has ends of its own.
    let report: Value = serde_json::from_slice(
        &succeed(
            hexroad(&[
                "sim",
                "--server",
                &server.base,
                "--json",
                "--video",
                "320x240@5",
                "--duration",
                "180s",
                "--seed",
                "4",
                "--devices",
                "2",
                "--manufacturer",
                &manufacturer,
            ])
            .env("RUST_LOG", "warn"),
        )
        .stdout,
    )
    .unwrap();
    assert!(
        report["uploads_acknowledged"].as_u64().unwrap() >= 18,
        "{report}"
    );
    let enrolled = sql(
        &data,
        "SELECT count(*) AS n, count(DISTINCT contributor_id) AS contributors \
         FROM enrolments WHERE bound AND manufacturer = 'sim'",
    );
    assert_eq!(enrolled[0]["n"], 2, "{enrolled:?}");
    assert_eq!(
        sql_u64(&data, "SELECT count(*) FROM contributors"),
        2,
        "each contributor's account made by its first binding"
    );
    wait_processed(&data, Duration::from_secs(240));

    // Each published frame against the ends of its own drive (the GNSS
    // uploads of its device and drive_id), as the operator sees them.
    let pairs = sql(
        &data,
        "WITH ends AS ( \
           SELECT u.device_id, u.drive_id, g.lat, g.lon FROM gnss g \
           JOIN uploads u ON g.upload_id = u.upload_id \
           JOIN (SELECT upload_id, min(ts) AS t0, max(ts) AS t1 FROM gnss GROUP BY upload_id) m \
             ON g.upload_id = m.upload_id AND (g.ts = m.t0 OR g.ts = m.t1)) \
         SELECT f.lat, f.lon, e.lat AS end_lat, e.lon AS end_lon FROM frames f \
         JOIN uploads v ON f.upload_id = v.upload_id \
         JOIN ends e ON e.device_id = v.device_id AND e.drive_id = v.drive_id \
         WHERE f.image_key IS NOT NULL",
    );
    assert!(!pairs.is_empty(), "the middles of the drives are published");
    for p in &pairs {
        let at = (p["lat"].as_f64().unwrap(), p["lon"].as_f64().unwrap());
        let end = (
            p["end_lat"].as_f64().unwrap(),
            p["end_lon"].as_f64().unwrap(),
        );
        assert!(
            metres(at, end) > 60.0,
            "frame {at:?} published near its drive's end {end:?}"
        );
    }
    let withheld = sql_u64(
        &data,
        "SELECT count(*) FROM frames WHERE image_key IS NULL \
         AND dedupe_reason LIKE 'private: near%'",
    );
    assert!(withheld > 0, "frames near the drive ends were withheld");
    let published = sql_u64(
        &data,
        "SELECT count(*) FROM frames WHERE image_key IS NOT NULL",
    );

    // What the public gets over HTTP: nothing within the radius of an end
    // (less the four-decimal rounding, about 11 m).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let public: Vec<Value> = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/v1/sql", server.base))
            .header("content-type", "application/json")
            .body(r#"{"query": "SELECT lat, lon, contributor FROM frames"}"#)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(public.len() as u64, published);
    for frame in &public {
        assert!(frame["contributor"].as_str().unwrap().starts_with("p-"));
    }

    // The right to be forgotten, while the server runs: contributor-0001's
    // frames leave the public answers and its images are no longer served.
    let forgotten_frames = sql(
        &data,
        "SELECT frame_id FROM frames WHERE contributor_id = 'contributor-0001' \
         AND image_key IS NOT NULL",
    );
    assert!(!forgotten_frames.is_empty());
    let out =
        succeed(hexroad(&["forget", "--contributor", "contributor-0001", "--data"]).arg(&data));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["objects"].as_u64().unwrap() >= forgotten_frames.len() as u64);
    assert_eq!(
        sql_u64(
            &data,
            "SELECT count(*) FROM uploads WHERE contributor_id = 'contributor-0001'"
        ),
        0
    );
    let left: Vec<Value> = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/v1/sql", server.base))
            .header("content-type", "application/json")
            .body(r#"{"query": "SELECT frame_id FROM frames"}"#)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(left.len() + forgotten_frames.len(), public.len());
    let image = format!(
        "{}/frames/{}.jpg",
        server.base,
        forgotten_frames[0]["frame_id"].as_str().unwrap()
    );
    let status = runtime.block_on(async { reqwest::get(&image).await.unwrap().status() });
    assert_eq!(status.as_u16(), 404);
}
