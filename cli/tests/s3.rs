//! The whole pipeline with its lake on a real S3-compatible server
//! (SeaweedFS, started here, signed requests): `serve` takes a flaky
//! fleet's uploads into the bucket, vision publishes frames there, the map
//! serves tiles and frame images from it, SQL and an epoch read it, and a
//! map archive is exported from it; nothing on the local disk but scratch.

use std::time::Duration;

use chrono::Utc;

mod common;
use common::{
    S3Location, assert_tables_match, epoch_command, ledger, serve, sim, sql, sql_u64, succeed,
    wait_processed,
};
#[path = "../../lake/tests/support/seaweed.rs"]
mod seaweed;

fn get(url: &str) -> (u16, Vec<u8>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let r = reqwest::get(url).await.unwrap();
        let status = r.status().as_u16();
        (status, r.bytes().await.unwrap().to_vec())
    })
}

/// A fresh location in `store`'s bucket, with what reaches it.
fn lake_on(store: &seaweed::Seaweed) -> S3Location {
    S3Location {
        url: store.location(),
        env: store.owned_env(),
    }
}

#[test]
fn the_pipeline_runs_with_its_lake_on_s3() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(seaweed::Seaweed::start());
    let data = lake_on(&store);
    let server = serve(
        &data,
        "127.0.0.1:0",
        &[
            ("HEXROAD__VISION__POLL_INTERVAL", "200ms"),
            ("HEXROAD__TILES__POLL_INTERVAL", "200ms"),
        ],
    );
    let start = Utc::now() - chrono::Duration::hours(2);
    let report = sim(&server.base, &["--seed", "21", "--devices", "2", "--flaky"]);
    assert_tables_match(&data, &report);
    wait_processed(&data, Duration::from_secs(240));

    // Frames were published into the bucket and are served from it.
    let published = sql(
        &data,
        "SELECT image_key FROM frames WHERE image_key IS NOT NULL LIMIT 3",
    );
    assert!(!published.is_empty(), "vision published frames");
    let (status, _) = get(&format!("{}/tiles.json", server.base));
    assert_eq!(status, 200);
    let (status, tile) = get(&format!("{}/tiles/0/0/0.mvt", server.base));
    assert_eq!(status, 200);
    assert!(
        !tile.is_empty(),
        "the world tile holds the fleet's coverage"
    );
    let frame_id = sql(
        &data,
        "SELECT frame_id FROM frames WHERE image_key IS NOT NULL LIMIT 1",
    )[0]["frame_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, jpeg) = get(&format!("{}/frames/{frame_id}.jpg", server.base));
    assert_eq!(status, 200, "frame {frame_id}");
    assert!(jpeg.starts_with(&[0xff, 0xd8]), "a JPEG");
    drop(server);

    // An epoch over the bucket, twice: the same bytes.
    std::thread::sleep(Duration::from_millis(1500));
    let epoch = common::epoch_interval(start, Utc::now() - chrono::Duration::seconds(1));
    let dir = tempfile::tempdir().unwrap();
    succeed(&mut epoch_command(&data, &epoch, &dir.path().join("a")));
    succeed(&mut epoch_command(&data, &epoch, &dir.path().join("b")));
    let first = ledger(&dir.path().join("a"));
    assert_eq!(first, ledger(&dir.path().join("b")));
    let ledger: serde_json::Value = serde_json::from_slice(&first).unwrap();
    assert!(ledger["total"].as_u64().unwrap() > 0, "{ledger}");
    assert_eq!(
        sql_u64(&data, "SELECT count(*) FROM rewards"),
        ledger["rewards"].as_array().unwrap().len() as u64
    );

    // An analyst's Spark engine (Sail, through the PySpark client) reads
    // the same tables from the bucket and answers as `hexroad sql` does.
    let questions = [
        "SELECT status, count(*) AS n FROM {uploads} GROUP BY status ORDER BY status",
        "SELECT device_id, count(*) AS n FROM {gnss} GROUP BY device_id ORDER BY device_id",
        "SELECT cell, count(*) AS n FROM {frames} WHERE image_key IS NOT NULL \
         GROUP BY cell ORDER BY cell",
    ];
    let file = dir.path().join("questions.json");
    std::fs::write(&file, serde_json::to_vec(&questions).unwrap()).unwrap();
    let out = succeed(
        std::process::Command::new(common::python())
            .arg(common::root().join("cli/tests/support/sail_check.py"))
            .arg(&data.url)
            .arg(&file)
            .envs(data.env.iter().map(|(k, v)| (k, v))),
    );
    let sail: Vec<Vec<serde_json::Value>> = serde_json::from_slice(&out.stdout).unwrap();
    for (question, answer) in questions.iter().zip(&sail) {
        let ours = sql(&data, &question.replace(['{', '}'], ""));
        assert!(!ours.is_empty(), "{question}");
        assert_eq!(&ours, answer, "{question}");
    }

    // The map archive, from the bucket.
    let archive = dir.path().join("map.pmtiles");
    let out = succeed(common::on_data(
        common::hexroad(&["tiles", "export", "--maxzoom", "12", "--out"])
            .arg(&archive)
            .arg("--data"),
        &data,
    ));
    assert!(String::from_utf8_lossy(&out.stdout).contains("wrote"));
    let local = std::fs::read(&archive).unwrap();
    assert!(local.starts_with(b"PMTiles"), "a PMTiles archive");

    // And into the bucket, for a CDN: the same archive.
    let key = format!("{}/map.pmtiles", data.url);
    succeed(common::on_data(
        common::hexroad(&["tiles", "export", "--maxzoom", "12", "--out", &key]).arg("--data"),
        &data,
    ));
    let stored = runtime.block_on(async {
        use hexroad_lake::object_store::ObjectStoreExt as _;
        let path = hexroad_lake::object_store::path::Path::from(
            key.trim_start_matches(&format!("s3://{}/", seaweed::BUCKET)),
        );
        store
            .store()
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    });
    assert_eq!(stored.len(), local.len(), "the same tiles, in the bucket");
    assert!(stored.starts_with(b"PMTiles"));
}

/// The S3 server is killed while a flaky fleet uploads and comes back
/// seconds later: the uploads in flight wait or are retried, and every
/// acknowledged upload is stored exactly once.
#[test]
fn uploads_ride_out_the_store_going_away() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut store = runtime.block_on(seaweed::Seaweed::start());
    let data = lake_on(&store);
    let server = serve(&data, "127.0.0.1:0", &[]);
    let base = server.base.clone();
    let fleet = std::thread::spawn(move || {
        sim(
            &base,
            &[
                "--seed",
                "23",
                "--devices",
                "10",
                "--flaky",
                "--retry-for",
                "300s",
            ],
        )
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!fleet.is_finished(), "the fleet is still uploading");
    store.stop();
    std::thread::sleep(Duration::from_secs(8));
    runtime.block_on(store.restart());
    let report = fleet.join().unwrap();
    assert_tables_match(&data, &report);
}
