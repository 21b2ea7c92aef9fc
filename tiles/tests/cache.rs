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
