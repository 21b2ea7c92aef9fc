//! The tile cache over a real lake: frames of a newly processed upload make
//! exactly the tiles they fall in render again, and no others.

use std::sync::Arc;

use chrono::Utc;
use hexroad_lake::Lake;
use hexroad_tiles::{TileId, Tiles, TilesConfig};

mod common;

/// Publishes `points` as one upload's frames, now.
async fn publish(lake: &Lake, upload: u128, points: &[(f64, f64)]) -> Vec<h3o::CellIndex> {
    let now = Utc::now();
    common::publish_at(lake, upload, points, |_| now, now).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_frames_forget_exactly_the_tiles_they_fall_in() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(Lake::open(&dir.path().to_string_lossy()).await.unwrap());
    // Helsinki's centre, and Tampere, 160 km away.
    publish(&lake, 1, &[(60.1699, 24.9384), (60.1702, 24.9390)]).await;
    let tiles = Tiles::new(Arc::clone(&lake), TilesConfig::default())
        .await
        .unwrap();
    assert_eq!(tiles.refresh().await.unwrap(), 0, "nothing new yet");

    let helsinki = TileId::containing(60.1699, 24.9384, 15);
    let helsinki_low = TileId::containing(60.1699, 24.9384, 8);
    let tampere = TileId::containing(61.4978, 23.7610, 15);
    let east = TileId::new(15, helsinki.x + 3, helsinki.y).unwrap();
    for id in [helsinki, helsinki_low, tampere, east] {
        tiles.tile(id).await.unwrap();
        assert!(tiles.is_cached(id));
    }
    let before = tiles.tile(helsinki).await.unwrap();
    assert_eq!(before.counts[0], 1, "one coverage hexagon");
    assert_eq!(before.counts[1], 2, "two frames at z15");

    // A second drive in Tampere: only tiles around it are forgotten.
    let cells = publish(&lake, 2, &[(61.4978, 23.7610)]).await;
    let touched = tiles.tiles_touched(&cells);
    let forgotten = tiles.refresh().await.unwrap();
    assert_eq!(forgotten, 1, "the one cached Tampere tile");
    assert!(!tiles.is_cached(tampere));
    assert!(touched.contains(&tampere));
    for id in [helsinki, helsinki_low, east] {
        assert!(tiles.is_cached(id), "{id:?} kept");
        assert!(!touched.contains(&id), "{id:?} not touched");
    }

    // A third in Helsinki: its tiles at every zoom go, the neighbour stays.
    publish(&lake, 3, &[(60.1700, 24.9386)]).await;
    assert_eq!(tiles.refresh().await.unwrap(), 2);
    assert!(!tiles.is_cached(helsinki) && !tiles.is_cached(helsinki_low));
    assert!(tiles.is_cached(east));
    let after = tiles.tile(helsinki).await.unwrap();
    assert_eq!(after.counts[1], 3, "the new frame is drawn");
    assert_ne!(after.etag, before.etag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_off_the_grid_or_too_deep_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(Lake::open(&dir.path().to_string_lossy()).await.unwrap());
    let tiles = Tiles::new(lake, TilesConfig::default()).await.unwrap();
    assert!(TileId::new(3, 8, 0).is_none());
    let deep = TileId::new(20, 0, 0).unwrap();
    let err = tiles.tile(deep).await.unwrap_err().to_string();
    assert!(err.contains("tiles go to zoom 18"), "{err}");
    // An empty lake gives empty tiles, not errors.
    let empty = tiles.tile(TileId::new(0, 0, 0).unwrap()).await.unwrap();
    assert!(empty.bytes.is_empty());
}

/// Every tile drawn from the coverage rollup (`tile`, the server's path)
/// is byte for byte the tile drawn by counting the snapshot's frames
/// (`render_in`, the export's path): once seeded, after frames it counted
/// as they were committed, and after a privacy zone made it count afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coverage_rollup_draws_what_the_frames_say() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(Lake::open(&dir.path().to_string_lossy()).await.unwrap());
    let at = |i: usize| Utc::now() - chrono::Duration::minutes(i as i64 * 37);
    // A drive across central Helsinki, a few frames a street apart.
    let drive = |from: (f64, f64), n: usize| -> Vec<(f64, f64)> {
        (0..n)
            .map(|i| (from.0 + i as f64 * 0.0007, from.1 + i as f64 * 0.0011))
            .collect()
    };
    common::publish_at(&lake, 1, &drive((60.160, 24.920), 40), at, Utc::now()).await;
    let clock_now = Utc::now();
    let config = TilesConfig {
        poll_interval: std::time::Duration::ZERO,
        ..TilesConfig::default()
    };
    let tiles = Tiles::new(Arc::clone(&lake), config)
        .await
        .unwrap()
        .with_clock(Arc::new(move || clock_now));
    let ids: Vec<TileId> = (6..=16)
        .flat_map(|z| {
            [(60.160, 24.920), (60.175, 24.944), (60.187, 24.962)]
                .map(|(lat, lon)| TileId::containing(lat, lon, z))
        })
        .collect();
    let same = |stage: &'static str| {
        let tiles = &tiles;
        let lake = &lake;
        let ids = &ids;
        async move {
            for &id in ids {
                let kept = tiles.render(id).await.unwrap();
                let counted = tiles
                    .render_in(&lake.snapshot().await.unwrap(), id)
                    .await
                    .unwrap();
                assert_eq!(kept.counts, counted.counts, "{stage}: {id:?}");
                assert_eq!(kept.bytes, counted.bytes, "{stage}: {id:?}");
            }
        }
    };
    same("seeded").await;
    // A second drive overlapping the first: counted from its commit.
    common::publish_at(&lake, 2, &drive((60.170, 24.930), 30), at, Utc::now()).await;
    same("after new frames").await;
    assert!(tiles.render(ids[20]).await.unwrap().counts[0] > 0);

    let zone = hexroad_lake::PrivacyZone {
        zone_id: uuid::Uuid::from_u128(1),
        contributor_id: "contributor-1".parse().unwrap(),
        device_id: hexroad_wire::DeviceId::from_public_key(&[7; 32]),
        lat: 60.175,
        lon: 24.944,
        radius_m: 400.0,
        active: true,
        changed_at: Utc::now(),
    };
    lake.record_privacy_zone(&zone).await.unwrap();
    lake.note_hidden_change().await.unwrap();
    same("after a privacy zone").await;
}
