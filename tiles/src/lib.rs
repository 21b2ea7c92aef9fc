//! Vector tiles of the lake: coverage hexagons, published frames and drive
//! tracks as Mapbox Vector Tiles, a cache that forgets exactly the tiles
//! whose cells receive new frames, TileJSON, the web map, and PMTiles export.
//!
//! Tiles are rendered from SQL over the lake, so what the map shows is what
//! `SELECT … FROM coverage` answers.

pub mod http;
pub mod mercator;
pub mod mvt;
pub mod pmtiles;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use h3o::{CellIndex, Resolution};
use hexroad_lake::object_store::ObjectStoreExt;
use hexroad_lake::{BoundingBox, FramePoint, Lake, Snapshot};
use hexroad_wire::{DeviceId, FrameId, UploadId};
use serde::{Deserialize, Serialize};
use sha2::Digest;

pub use mercator::TileId;

/// Tile coordinates per tile side, and the margin drawn beyond it so
/// strokes and hexagons meet cleanly at tile edges.
pub const EXTENT: u32 = 4096;
pub const BUFFER: u32 = 64;

/// What tiles show and how long they are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TilesConfig {
    /// The finest hexagon resolution drawn (coverage is counted at 10).
    pub max_resolution: u8,
    /// Smallest on-screen hexagon, in pixels of a 256-pixel tile: the zoom
    /// picks the finest resolution whose hexagons are at least this wide.
    pub min_hex_px: f64,
    /// Frames are drawn as points from this zoom.
    pub frames_minzoom: u8,
    /// Drive tracks are drawn from this zoom.
    pub tracks_minzoom: u8,
    /// The deepest zoom served.
    pub maxzoom: u8,
    /// Tiles held in memory.
    pub cache_tiles: usize,
    /// A cached tile is rendered again after this long even without new
    /// frames, so `freshness_days` keeps up with the clock.
    #[serde(with = "hexroad_lake::duration_text")]
    pub max_age: Duration,
    /// How often the cache looks for newly processed uploads.
    #[serde(with = "hexroad_lake::duration_text")]
    pub poll_interval: Duration,
    /// MapLibre GL JS's `dist/` folder, installed from npm by the set-up.
    pub maplibre: std::path::PathBuf,
}

impl Default for TilesConfig {
    fn default() -> Self {
        Self {
            max_resolution: 10,
            min_hex_px: 6.0,
            frames_minzoom: 14,
            tracks_minzoom: 10,
            maxzoom: 18,
            cache_tiles: 20_000,
            max_age: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(2),
            maplibre: "datasets/maplibre-gl".into(),
        }
    }
}

impl TilesConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_resolution > 15 {
            return Err("tiles.max_resolution must be 0 to 15".into());
        }
        if !(self.min_hex_px > 0.0 && self.min_hex_px.is_finite()) {
            return Err("tiles.min_hex_px must be a positive number".into());
        }
        if self.maxzoom > 22 || self.frames_minzoom > self.maxzoom {
            return Err("tiles.maxzoom must be at most 22 and at least frames_minzoom".into());
        }
        if self.cache_tiles == 0 {
            return Err("tiles.cache_tiles must be positive".into());
        }
        Ok(())
    }

    /// The hexagon resolution drawn at zoom `z`: the finest whose hexagons
    /// are at least `min_hex_px` across at the equator (wider elsewhere).
    pub fn resolution(&self, z: u8) -> u8 {
        let metres_per_px = 156_543.033_928 / f64::from(1u32 << z);
        let mut best = 0;
        for r in 0..=self.max_resolution {
            let res = Resolution::try_from(r).unwrap_or(Resolution::Zero);
            if 2.0 * res.edge_length_m() / metres_per_px >= self.min_hex_px {
                best = r;
            }
        }
        best
    }
}

/// Everything a tile can fail on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no tile {z}/{x}/{y}: {reason}")]
    NoSuchTile {
        z: u32,
        x: u32,
        y: u32,
        reason: String,
    },
    #[error(transparent)]
    Lake(#[from] hexroad_lake::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A rendered tile, uncompressed and gzipped, with its entity tag.
#[derive(Debug)]
pub struct Tile {
    pub id: TileId,
    pub bytes: Vec<u8>,
    pub gzip: Vec<u8>,
    pub etag: String,
    pub rendered: Instant,
    /// Features per layer: coverage, frames, tracks.
    pub counts: [usize; 3],
}

struct Cache {
    tiles: HashMap<TileId, Arc<Tile>>,
    order: VecDeque<TileId>,
    /// Uploads whose frames the cache has accounted for.
    seen_uploads: HashSet<UploadId>,
    /// Bumped on every invalidation, so a render that raced one is not kept.
    generation: u64,
}

/// The tile service over one lake.
pub struct Tiles {
    lake: Arc<Lake>,
    config: TilesConfig,
    cache: Mutex<Cache>,
    /// One snapshot of the tables shared by renders, taken again after
    /// `poll_interval` or as soon as new frames are seen.
    session: tokio::sync::Mutex<Option<(Instant, Snapshot)>>,
    /// Image keys of the frames drawn lately, so opening one from the map
    /// needs no scan of `frames`.
    images: Mutex<HashMap<FrameId, String>>,
    /// The published frames' bounds and the cache generation they were
    /// read at: the map asks every few seconds, frames land far less often.
    bounds: tokio::sync::Mutex<Option<(u64, Option<[f64; 4]>)>>,
}

/// Frame image keys remembered before the map of them is cleared.
const REMEMBERED_IMAGES: usize = 200_000;

impl Tiles {
    /// Remembers which uploads' frames are already in the lake, so only
    /// later ones invalidate tiles.
    pub async fn new(lake: Arc<Lake>, config: TilesConfig) -> Result<Self> {
        let tiles = Self {
            lake,
            config,
            cache: Mutex::new(Cache {
                tiles: HashMap::new(),
                order: VecDeque::new(),
                seen_uploads: HashSet::new(),
                generation: 0,
            }),
            session: tokio::sync::Mutex::new(None),
            images: Mutex::new(HashMap::new()),
            bounds: tokio::sync::Mutex::new(None),
        };
        let processed = tiles.processed_uploads().await?;
        tiles.lock().seen_uploads = processed;
        Ok(tiles)
    }

    pub fn config(&self) -> &TilesConfig {
        &self.config
    }

    pub fn lake(&self) -> &Arc<Lake> {
        &self.lake
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tile, from the cache or rendered now.
    pub async fn tile(&self, id: TileId) -> Result<Arc<Tile>> {
        if id.z > self.config.maxzoom {
            return Err(Error::NoSuchTile {
                z: id.z.into(),
                x: id.x,
                y: id.y,
                reason: format!("tiles go to zoom {}", self.config.maxzoom),
            });
        }
        let generation = {
            let cache = self.lock();
            if let Some(t) = cache.tiles.get(&id)
                && t.rendered.elapsed() < self.config.max_age
            {
                return Ok(Arc::clone(t));
            }
            cache.generation
        };
        let tile = Arc::new(self.render(id).await?);
        let mut cache = self.lock();
        if cache.generation == generation {
            if cache.tiles.insert(id, Arc::clone(&tile)).is_none() {
                cache.order.push_back(id);
            }
            while cache.tiles.len() > self.config.cache_tiles {
                match cache.order.pop_front() {
                    Some(old) => {
                        cache.tiles.remove(&old);
                    }
                    None => break,
                }
            }
        }
        Ok(tile)
    }

    /// Moves whenever cached tiles are forgotten for new frames; clients
    /// fetch tiles again when it changes.
    pub fn version(&self) -> u64 {
        self.lock().generation
    }

    /// West, south, east, north of every published frame; `None` when
    /// nothing is published yet. Read again only after new frames land.
    pub async fn data_bounds(&self) -> Result<Option<[f64; 4]>> {
        let generation = self.version();
        let mut held = self.bounds.lock().await;
        if let Some((read_at, bounds)) = *held
            && read_at == generation
        {
            return Ok(bounds);
        }
        let bounds = self.read_bounds().await?;
        *held = Some((generation, bounds));
        Ok(bounds)
    }

    async fn read_bounds(&self) -> Result<Option<[f64; 4]>> {
        Ok(self
            .lake
            .published_bounds()
            .await?
            .map(|b| [b.west, b.south, b.east, b.north]))
    }

    fn remember_images(&self, frames: &[FramePoint]) {
        let mut images = self.images.lock().unwrap_or_else(|e| e.into_inner());
        if images.len() + frames.len() > REMEMBERED_IMAGES {
            images.clear();
        }
        for f in frames {
            images.insert(f.frame_id, f.image_key.clone());
        }
    }

    fn remembered_image(&self, frame_id: FrameId) -> Option<String> {
        let images = self.images.lock().unwrap_or_else(|e| e.into_inner());
        images.get(&frame_id).cloned()
    }

    /// Whether the cache holds this tile now.
    pub fn is_cached(&self, id: TileId) -> bool {
        self.lock().tiles.contains_key(&id)
    }

    /// Renders a tile from the lake, bypassing the cache.
    pub async fn render(&self, id: TileId) -> Result<Tile> {
        let snapshot = self.snapshot().await?;
        self.render_in(&snapshot, id).await
    }

    /// The snapshot tiles are rendered from, renewed at most once a poll.
    async fn snapshot(&self) -> Result<Snapshot> {
        let mut held = self.session.lock().await;
        if let Some((at, snapshot)) = &*held
            && at.elapsed() < self.config.poll_interval
        {
            return Ok(snapshot.clone());
        }
        let snapshot = self.lake.snapshot().await?;
        *held = Some((Instant::now(), snapshot.clone()));
        Ok(snapshot)
    }

    /// Renders a tile in a session the caller holds: many tiles from one
    /// snapshot of the tables, as an export wants.
    pub async fn render_in(&self, snapshot: &Snapshot, id: TileId) -> Result<Tile> {
        let now = Utc::now();
        let mut coverage = mvt::Layer::new("coverage", EXTENT);
        let mut frames = mvt::Layer::new("frames", EXTENT);
        let mut tracks = mvt::Layer::new("tracks", EXTENT);
        let lo = -f64::from(BUFFER);
        let hi = f64::from(EXTENT + BUFFER);

        // Coverage: hexagons at the zoom's resolution, from every published
        // frame of every cell that reaches into the (buffered) tile.
        let res = Resolution::try_from(self.config.resolution(id.z)).unwrap_or(Resolution::Zero);
        let margin_m = 2.5 * res.edge_length_m();
        for c in snapshot.coverage_in(widen(id, margin_m), res).await? {
            let ring: Vec<[f64; 2]> = c
                .cell
                .boundary()
                .iter()
                .map(|ll| id.project(ll.lat(), ll.lng(), EXTENT))
                .collect();
            let clipped = mercator::clip_ring(&ring, lo, hi);
            if clipped.len() < 3 {
                continue;
            }
            let geometry = mvt::Geometry::Polygon(vec![round(&clipped)]);
            let cell = u64::from(c.cell);
            coverage.add(
                Some(cell),
                &geometry,
                &[
                    ("cell", mvt::Value::String(cell.to_string())),
                    ("res", mvt::Value::Uint(u8::from(res).into())),
                    ("frames", mvt::Value::Uint(c.frames)),
                    ("contributors", mvt::Value::Uint(c.contributors)),
                    ("first_seen", mvt::Value::String(iso(c.first_seen))),
                    ("last_seen", mvt::Value::String(iso(c.last_seen))),
                    (
                        "freshness_days",
                        mvt::Value::Double(
                            ((now - c.last_seen).num_seconds() as f64 / 86_400.0 * 100.0).round()
                                / 100.0,
                        ),
                    ),
                ],
            );
        }

        // Frames: one point each, with what the map needs to open it.
        if id.z >= self.config.frames_minzoom {
            let points = snapshot.frames_in(widen(id, 0.0)).await?;
            self.remember_images(&points);
            for f in points {
                let p = id.project(f.lat, f.lon, EXTENT);
                if !(lo..hi).contains(&p[0]) || !(lo..hi).contains(&p[1]) {
                    continue;
                }
                frames.add(
                    None,
                    &mvt::Geometry::Points(vec![[p[0].round() as i32, p[1].round() as i32]]),
                    &[
                        ("frame_id", mvt::Value::String(f.frame_id.to_string())),
                        ("ts", mvt::Value::String(iso(f.ts))),
                        ("heading", mvt::Value::Double(f.heading)),
                        (
                            "contributor_id",
                            mvt::Value::String(f.contributor_id.to_string()),
                        ),
                        (
                            "image_url",
                            mvt::Value::String(format!("/frames/{}.jpg", f.frame_id)),
                        ),
                    ],
                );
            }
        }

        // Tracks: each accepted drive's fixes as a line, simplified to half
        // a screen pixel at this zoom.
        if id.z >= self.config.tracks_minzoom {
            let mut lines: Vec<(UploadId, DeviceId, Vec<[f64; 2]>)> = Vec::new();
            for fix in snapshot.track_fixes_in(widen(id, 200.0)).await? {
                let p = id.project(fix.lat, fix.lon, EXTENT);
                match lines.last_mut() {
                    Some((u, _, pts)) if *u == fix.upload_id => pts.push(p),
                    _ => lines.push((fix.upload_id, fix.device_id, vec![p])),
                }
            }
            let tolerance = f64::from(EXTENT) / 256.0 / 2.0;
            for (upload, device, pts) in lines {
                let simple = mercator::simplify(&pts, tolerance);
                let parts: Vec<Vec<[i32; 2]>> = mercator::clip_line(&simple, lo, hi)
                    .iter()
                    .map(|p| round(p))
                    .collect();
                tracks.add(
                    None,
                    &mvt::Geometry::Lines(parts),
                    &[
                        ("upload_id", mvt::Value::String(upload.to_string())),
                        ("device_id", mvt::Value::String(device.to_string())),
                    ],
                );
            }
        }

        let counts = [coverage.len(), frames.len(), tracks.len()];
        let bytes = mvt::encode(&[coverage, frames, tracks]);
        let gzip = gzip(&bytes);
        let etag = format!("\"{}\"", hex::encode(&sha2::Sha256::digest(&bytes)[..12]));
        Ok(Tile {
            id,
            bytes,
            gzip,
            etag,
            rendered: Instant::now(),
            counts,
        })
    }

    async fn processed_uploads(&self) -> Result<HashSet<UploadId>> {
        Ok(self.lake.processed_uploads().await?)
    }

    /// Looks for uploads processed since the last look and forgets the
    /// cached tiles their published frames fall in, at every zoom; returns
    /// how many tiles were forgotten.
    pub async fn refresh(&self) -> Result<usize> {
        let processed = self.processed_uploads().await?;
        let new: Vec<UploadId> = {
            let cache = self.lock();
            processed
                .iter()
                .filter(|u| !cache.seen_uploads.contains(*u))
                .cloned()
                .collect()
        };
        if new.is_empty() {
            return Ok(0);
        }
        let cells = self.lake.published_cells(&new).await?;
        let stale = self.tiles_touched(&cells);
        // A fresh snapshot first, so no render after this sees the old one.
        *self.session.lock().await = None;
        let mut cache = self.lock();
        let before = cache.tiles.len();
        cache.tiles.retain(|id, _| !stale.contains(id));
        let Cache { tiles, order, .. } = &mut *cache;
        order.retain(|id| tiles.contains_key(id));
        cache.generation += 1;
        cache.seen_uploads.extend(new);
        Ok(before - cache.tiles.len())
    }

    /// Every tile, at every zoom served, whose content a frame in one of
    /// these resolution-15 cells changes: the tiles its coverage hexagon
    /// (with the tile buffer) reaches, and from `frames_minzoom` the tiles
    /// its point (with the buffer) falls in.
    pub fn tiles_touched(&self, cells: &[CellIndex]) -> HashSet<TileId> {
        let mut out = HashSet::new();
        for z in 0..=self.config.maxzoom {
            let res = Resolution::try_from(self.config.resolution(z)).unwrap_or(Resolution::Zero);
            let parents: HashSet<CellIndex> = cells.iter().filter_map(|c| c.parent(res)).collect();
            for p in &parents {
                tiles_reached(
                    &mut out,
                    z,
                    p.boundary().iter().map(|ll| (ll.lat(), ll.lng())),
                );
            }
            if z >= self.config.frames_minzoom {
                for c in cells {
                    let ll = h3o::LatLng::from(*c);
                    tiles_reached(&mut out, z, std::iter::once((ll.lat(), ll.lng())));
                }
            }
        }
        out
    }

    /// The H3 cells a `SELECT DISTINCT cell …` answers.
    /// The tiles with any content: those every published frame touches
    /// (coverage and frames) and, from `tracks_minzoom`, those every
    /// accepted GNSS fix falls in (with the buffer), from `minzoom` to
    /// `maxzoom`.
    pub async fn tiles_with_content(&self, minzoom: u8, maxzoom: u8) -> Result<Vec<TileId>> {
        let frames = self.lake.all_published_cells().await?;
        let mut all = self.tiles_touched(&frames);
        let fixes = self.lake.all_track_cells().await?;
        for c in fixes {
            let ll = h3o::LatLng::from(c);
            for z in self.config.tracks_minzoom..=self.config.maxzoom {
                tiles_reached(&mut all, z, std::iter::once((ll.lat(), ll.lng())));
            }
        }
        let mut tiles: Vec<TileId> = all
            .into_iter()
            .filter(|t| (minzoom..=maxzoom).contains(&t.z))
            .collect();
        tiles.sort();
        Ok(tiles)
    }

    /// Runs [`Tiles::refresh`] every `poll_interval` until `stop` is true.
    pub async fn watch(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                () = stop.cancelled() => return,
            }
            match self.refresh().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(tiles = n, "new frames: cached tiles forgotten"),
                Err(e) => tracing::warn!(error = %e, "tile cache refresh"),
            }
        }
    }
}

/// Adds the tiles at zoom `z` that the bounding box of `points` (lat, lon),
/// padded by the tile buffer, reaches.
fn tiles_reached(out: &mut HashSet<TileId>, z: u8, points: impl Iterator<Item = (f64, f64)>) {
    let n = f64::from(1u32 << z);
    let pad = f64::from(BUFFER) / f64::from(EXTENT);
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for (lat, lon) in points {
        let (x, y) = mercator::world(lat, lon);
        x0 = x0.min(x * n);
        y0 = y0.min(y * n);
        x1 = x1.max(x * n);
        y1 = y1.max(y * n);
    }
    if x0 > x1 {
        return;
    }
    let span = |a: f64, b: f64| {
        let lo = ((a - pad).floor().max(0.0)) as u32;
        let hi = ((b + pad).floor().min(n - 1.0)) as u32;
        lo..=hi
    };
    for x in span(x0, x1) {
        for y in span(y0, y1) {
            out.insert(TileId { z, x, y });
        }
    }
}

/// The tile's bounds widened by `margin_m` metres and the tile buffer.
fn widen(id: TileId, margin_m: f64) -> BoundingBox {
    let [w, s, e, n] = id.bounds();
    let buffer = f64::from(BUFFER) / f64::from(EXTENT);
    let (dx, dy) = ((e - w) * buffer, (n - s) * buffer);
    let lat_m = margin_m / 111_320.0;
    let widest = s.abs().max(n.abs()).min(89.0).to_radians().cos();
    let lon_m = margin_m / (111_320.0 * widest);
    BoundingBox {
        south: s - dy - lat_m,
        north: n + dy + lat_m,
        west: w - dx - lon_m,
        east: e + dx + lon_m,
    }
}

fn round(points: &[[f64; 2]]) -> Vec<[i32; 2]> {
    points
        .iter()
        .map(|p| [p[0].round() as i32, p[1].round() as i32])
        .collect()
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// The anonymized JPEG of a published frame; `None` when no published frame
/// has this id. Only keys under `frames/` are ever read.
pub async fn frame_image(tiles: &Tiles, frame_id: FrameId) -> Result<Option<bytes::Bytes>> {
    let key = match tiles.remembered_image(frame_id) {
        Some(key) => key,
        None => match tiles.lake.frame_image_key(frame_id).await? {
            Some(key) => key,
            None => return Ok(None),
        },
    };
    if !key.starts_with("frames/") || key.contains("..") {
        return Ok(None);
    }
    let path = hexroad_lake::object_store::path::Path::from(key.as_str());
    match tiles.lake.blobs().get(&path).await {
        Ok(got) => Ok(Some(got.bytes().await.map_err(|source| {
            hexroad_lake::Error::Blob {
                key: key.clone(),
                source,
            }
        })?)),
        Err(hexroad_lake::object_store::Error::NotFound { .. }) => Ok(None),
        Err(source) => Err(hexroad_lake::Error::Blob { key, source }.into()),
    }
}

/// TileJSON 3.0 for tiles at `urls`.
pub fn tilejson(config: &TilesConfig, urls: &[String]) -> serde_json::Value {
    serde_json::json!({
        "tilejson": "3.0.0",
        "name": "hexroad",
        "description": "Coverage, published frames and drive tracks from the hexroad lake",
        "attribution": "hexroad contributors",
        "scheme": "xyz",
        "tiles": urls,
        "minzoom": 0,
        "maxzoom": config.maxzoom,
        "bounds": [-180.0, -85.051_128_779_806_59, 180.0, 85.051_128_779_806_59],
        "vector_layers": [
            {
                "id": "coverage",
                "description": "H3 hexagons with published frames; the resolution follows the zoom",
                "minzoom": 0,
                "maxzoom": config.maxzoom,
                "fields": {
                    "cell": "String: the H3 index in decimal",
                    "res": "Number: the H3 resolution",
                    "frames": "Number: published frames in the cell",
                    "contributors": "Number: distinct contributors",
                    "first_seen": "String: the first frame's time, RFC 3339",
                    "last_seen": "String: the latest frame's time, RFC 3339",
                    "freshness_days": "Number: days since the latest frame when the tile was made"
                }
            },
            {
                "id": "frames",
                "description": "Published (anonymized) frames",
                "minzoom": config.frames_minzoom,
                "maxzoom": config.maxzoom,
                "fields": {
                    "frame_id": "String",
                    "ts": "String: capture time, RFC 3339",
                    "heading": "Number: degrees clockwise from north",
                    "contributor_id": "String",
                    "image_url": "String: the anonymized JPEG, relative to the server"
                }
            },
            {
                "id": "tracks",
                "description": "Accepted drives' GNSS tracks, simplified to the zoom",
                "minzoom": config.tracks_minzoom,
                "maxzoom": config.maxzoom,
                "fields": {
                    "upload_id": "String",
                    "device_id": "String"
                }
            }
        ]
    })
}
