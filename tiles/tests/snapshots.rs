//! What the map's public surfaces answer, pinned: TileJSON, and one tile
//! decoded to readable text by a decoder written here from the MVT 2.1 spec
//! (not the encoder's own code), so a change to either is a reviewed diff.

use std::fmt::Write;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use hexroad_lake::Lake;
use hexroad_tiles::{TileId, Tiles, TilesConfig, tilejson};

mod common;

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, minute, 0).unwrap()
}

/// Three frames of one drive through Helsinki's centre, at fixed times.
async fn publish(lake: &Lake) {
    let points = [(60.1699, 24.9384), (60.1700, 24.9390), (60.1701, 24.9396)];
    common::publish_at(lake, 42, &points, |i| at(i as u32), at(10)).await;
}

#[test]
fn tilejson_is_pinned() {
    let doc = tilejson(
        &TilesConfig::default(),
        &["https://map.example/tiles/{z}/{x}/{y}.mvt".to_owned()],
    );
    insta::assert_json_snapshot!("tilejson", doc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tile_decoded_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(Lake::open(&dir.path().to_string_lossy()).await.unwrap());
    publish(&lake).await;
    let tiles = Tiles::new(Arc::clone(&lake), TilesConfig::default())
        .await
        .unwrap()
        .with_clock(Arc::new(|| at(0) + chrono::Duration::days(3)));
    let tile = tiles
        .render(TileId::containing(60.1700, 24.9390, 16))
        .await
        .unwrap();
    insta::assert_snapshot!("tile_z16_helsinki", readable(&tile.bytes));
}

/// A protobuf field: its number and its value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed64(u64),
}

fn varint(buf: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = buf[*at];
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
    }
    v
}

fn fields(buf: &[u8]) -> Vec<(u64, Field<'_>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let key = varint(buf, &mut at);
        let field = match key & 7 {
            0 => Field::Varint(varint(buf, &mut at)),
            1 => {
                let v = u64::from_le_bytes(buf[at..at + 8].try_into().unwrap());
                at += 8;
                Field::Fixed64(v)
            }
            2 => {
                let len = varint(buf, &mut at) as usize;
                let bytes = &buf[at..at + len];
                at += len;
                Field::Bytes(bytes)
            }
            wire => panic!("wire type {wire} is not used by MVT"),
        };
        out.push((key >> 3, field));
    }
    out
}

fn packed(bytes: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        out.push(varint(bytes, &mut at));
    }
    out
}

fn value(bytes: &[u8]) -> String {
    match fields(bytes).into_iter().next() {
        Some((1, Field::Bytes(s))) => format!("{:?}", String::from_utf8_lossy(s)),
        Some((3, Field::Fixed64(d))) => format!("{}", f64::from_bits(d)),
        Some((5, Field::Varint(u))) => format!("{u}"),
        Some((4, Field::Varint(i))) => format!("{}", i as i64),
        Some((7, Field::Varint(b))) => format!("{}", b != 0),
        _ => "?".into(),
    }
}

/// Geometry commands as text: `M x,y L x,y … Z`, with absolute coordinates.
fn geometry(commands: &[u64]) -> String {
    let zigzag = |v: u64| ((v >> 1) as i64) ^ -((v & 1) as i64);
    let (mut x, mut y, mut i) = (0i64, 0i64, 0);
    let mut text = Vec::new();
    while i < commands.len() {
        let (id, count) = (commands[i] & 7, commands[i] >> 3);
        i += 1;
        match id {
            7 => text.push("Z".to_owned()),
            1 | 2 => {
                for _ in 0..count {
                    x += zigzag(commands[i]);
                    y += zigzag(commands[i + 1]);
                    i += 2;
                    text.push(format!("{} {x},{y}", if id == 1 { "M" } else { "L" }));
                }
            }
            other => panic!("unknown geometry command {other}"),
        }
    }
    text.join(" ")
}

/// Every layer, key, value and feature of a tile, one per line.
fn readable(tile: &[u8]) -> String {
    let mut out = String::new();
    for (n, field) in fields(tile) {
        let (3, Field::Bytes(layer)) = (n, field) else {
            continue;
        };
        let (mut name, mut extent, mut version) = (String::new(), 0, 0);
        let (mut keys, mut values, mut features) = (Vec::new(), Vec::new(), Vec::new());
        for (n, f) in fields(layer) {
            match (n, f) {
                (1, Field::Bytes(b)) => name = String::from_utf8_lossy(b).into_owned(),
                (2, Field::Bytes(b)) => features.push(b),
                (3, Field::Bytes(b)) => keys.push(String::from_utf8_lossy(b).into_owned()),
                (4, Field::Bytes(b)) => values.push(value(b)),
                (5, Field::Varint(v)) => extent = v,
                (15, Field::Varint(v)) => version = v,
                _ => {}
            }
        }
        writeln!(out, "layer {name} (version {version}, extent {extent})").unwrap();
        for feature in features {
            let (mut id, mut kind, mut tags, mut geom) = (None, 0, Vec::new(), Vec::new());
            for (n, f) in fields(feature) {
                match (n, f) {
                    (1, Field::Varint(v)) => id = Some(v),
                    (2, Field::Bytes(b)) => tags = packed(b),
                    (3, Field::Varint(v)) => kind = v,
                    (4, Field::Bytes(b)) => geom = packed(b),
                    _ => {}
                }
            }
            let kind = ["unknown", "point", "line", "polygon"][kind as usize];
            let id = id.map_or_else(String::new, |i| format!(" id {i}"));
            writeln!(out, "  {kind}{id}: {}", geometry(&geom)).unwrap();
            for pair in tags.chunks(2) {
                writeln!(
                    out,
                    "    {} = {}",
                    keys[pair[0] as usize], values[pair[1] as usize]
                )
                .unwrap();
            }
        }
    }
    out
}
