//! Vector tiles of the lake: coverage hexagons, published frames and drive
//! tracks as Mapbox Vector Tiles, a cache that forgets exactly the tiles
//! whose cells receive new frames, TileJSON, the web map, and PMTiles export.
//!
//! Tiles are rendered from the lake's typed reads, so what the map shows is
//! what `SELECT … FROM coverage` answers. Each layer is a [`layers::Layer`];
//! this file is the cache and the invalidation around them.

mod gate;
pub mod http;
mod layers;
pub mod mercator;
pub mod mvt;
pub mod pmtiles;
mod rollup;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use h3o::{CellIndex, Resolution};
use hexroad_lake::object_store::ObjectStoreExt;
use hexroad_lake::{Lake, Snapshot};
use hexroad_wire::settings::{SettingError, require};
use hexroad_wire::{FrameId, UploadId};
use serde::{Deserialize, Serialize};
use sha2::Digest;

pub use layers::RenderContext;
pub use mercator::TileId;

use layers::{Coverage, Frames, Layer, Tracks};

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
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub max_age: Duration,
    /// How often the cache looks for newly processed uploads.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub poll_interval: Duration,
    /// MapLibre GL JS's `dist/` folder, installed from npm by the set-up.
    pub maplibre: std::path::PathBuf,
    /// Fixes this close to where a drive began or ended are not drawn
    /// (homes and workplaces), metres. Set from `[privacy] radius_m`.
    #[serde(skip)]
    pub privacy_radius_m: f64,
    /// Drive tracks are simplified at least this much, metres: the map
    /// shows roads driven, not a device's GNSS fixes.
    pub track_tolerance_m: f64,
    /// Cold tiles rendered at once.
    pub max_concurrent_renders: usize,
    /// Cold tiles waiting for a render; past this a client gets the stale
    /// tile if one is held, else 503 with `Retry-After`.
    pub max_queued_renders: usize,
    /// The URL clients reach the map at (`https://map.example.org`), used
    /// for the tile URLs in TileJSON. Empty: `serve` fills in the address it
    /// listens on. Never taken from a request's `Host` header, which the
    /// client chooses.
    pub public_url: String,
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
            privacy_radius_m: 500.0,
            track_tolerance_m: 5.0,
            max_concurrent_renders: 4,
            max_queued_renders: 64,
            public_url: String::new(),
        }
    }
}

impl TilesConfig {
    /// Checks values a typo could make absurd, naming the bad key.
    pub fn validate(&self) -> std::result::Result<(), SettingError> {
        require(
            self.max_resolution <= 15,
            "max_resolution",
            "must be 0 to 15",
        )?;
        require(
            self.min_hex_px > 0.0 && self.min_hex_px.is_finite(),
            "min_hex_px",
            "must be a positive number",
        )?;
        require(self.maxzoom <= 22, "maxzoom", "must be at most 22")?;
        require(
            self.frames_minzoom <= self.maxzoom,
            "frames_minzoom",
            "must be at most maxzoom",
        )?;
        require(
            self.privacy_radius_m.is_finite() && self.privacy_radius_m >= 0.0,
            "privacy_radius_m",
            "must be a number of metres, 0 or more",
        )?;
        require(
            self.track_tolerance_m.is_finite() && self.track_tolerance_m >= 0.0,
            "track_tolerance_m",
            "must be a number of metres, 0 or more",
        )?;
        require(
            self.max_concurrent_renders > 0,
            "max_concurrent_renders",
            "must be at least 1",
        )?;
        require(self.cache_tiles > 0, "cache_tiles", "must be positive")
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
    #[error(
        "too many tiles are being rendered; retry in {retry_after_s} s (cached tiles are still served)"
    )]
    Busy { retry_after_s: u64 },
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
    /// The `processing` version whose verdicts the cache has accounted
    /// for: a refresh reads only the verdicts committed after it.
    processing_seen: u64,
    /// Bumped on every invalidation, so a render that raced one is not kept.
    generation: u64,
    /// Published frames whose images are not served (inside a privacy
    /// zone), as of `hidden_generation`.
    hidden: HashSet<FrameId>,
    /// The lake's hidden-change marker when `hidden` was computed.
    hidden_generation: Option<String>,
}

/// The tile service over one lake.
pub struct Tiles {
    lake: Arc<Lake>,
    config: TilesConfig,
    cache: Mutex<Cache>,
    /// One snapshot of the tables shared by renders, taken again after
    /// `poll_interval` or as soon as new frames are seen.
    session: tokio::sync::Mutex<Option<(Instant, Snapshot)>>,
    /// The published frames' bounds and the cache generation they were
    /// read at: the map asks every few seconds, frames land far less often.
    bounds: tokio::sync::Mutex<Option<(u64, Option<[f64; 4]>)>>,
    /// The time tiles are made at; the system clock unless a test fixes it.
    clock: Clock,
    /// Bounds cold renders and joins renders of one tile.
    gate: gate::Gate,
    /// Coverage per cell, kept up as the snapshot is renewed; seeded by
    /// the first render that needs it.
    rollup: tokio::sync::RwLock<Option<rollup::Rollup>>,
}

/// The clock tiles are rendered by.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

impl Tiles {
    /// Remembers which uploads' frames are already in the lake, so only
    /// later ones invalidate tiles.
    pub async fn new(lake: Arc<Lake>, config: TilesConfig) -> Result<Self> {
        let tiles = Self {
            lake,
            cache: Mutex::new(Cache {
                tiles: HashMap::new(),
                order: VecDeque::new(),
                processing_seen: 0,
                generation: 0,
                hidden: HashSet::new(),
                hidden_generation: None,
            }),
            session: tokio::sync::Mutex::new(None),
            bounds: tokio::sync::Mutex::new(None),
            clock: Arc::new(Utc::now),
            gate: gate::Gate::new(config.max_concurrent_renders, config.max_queued_renders),
            rollup: tokio::sync::RwLock::new(None),
            config,
        };
        let version = tiles
            .lake
            .table_version(hexroad_lake::TableName::Processing)
            .await?;
        tiles.lock().processing_seen = version;
        tiles.refresh_hidden().await?;
        Ok(tiles)
    }

    /// Renders by `clock` instead of the system's (fixed times in tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
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
        if let Some(t) = self.cached(id, false) {
            return Ok(t);
        }
        // Whoever asked for this tile first renders it; the rest wait here
        // and find it in the cache.
        let _flight = self.gate.join(id).await;
        if let Some(t) = self.cached(id, false) {
            return Ok(t);
        }
        let generation = self.lock().generation;
        let Some(_turn) = self.gate.turn().await else {
            return self
                .cached(id, true)
                .ok_or(Error::Busy { retry_after_s: 1 });
        };
        self.gate.count_render();
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

    /// The cached tile, if fresh (or, with `stale`, however old).
    fn cached(&self, id: TileId, stale: bool) -> Option<Arc<Tile>> {
        let cache = self.lock();
        cache
            .tiles
            .get(&id)
            .filter(|t| stale || t.rendered.elapsed() < self.config.max_age)
            .map(Arc::clone)
    }

    /// Tiles rendered on demand (cache misses that rendered) so far.
    pub fn rendered(&self) -> u64 {
        self.gate.rendered()
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

    /// Whether the cache holds this tile now.
    pub fn is_cached(&self, id: TileId) -> bool {
        self.lock().tiles.contains_key(&id)
    }

    /// Renders a tile from the lake, bypassing the cache: coverage from
    /// the rollup, the rest from the shared snapshot.
    pub async fn render(&self, id: TileId) -> Result<Tile> {
        let snapshot = self.snapshot().await?;
        let rollup = self.rollup.read().await;
        self.render_with(&snapshot, rollup.as_ref(), id).await
    }

    /// The snapshot tiles are rendered from, renewed at most once a poll;
    /// the coverage rollup is brought up to date with it.
    async fn snapshot(&self) -> Result<Snapshot> {
        let mut held = self.session.lock().await;
        if let Some((at, snapshot)) = &*held
            && at.elapsed() < self.config.poll_interval
        {
            return Ok(snapshot.clone());
        }
        self.advance_rollup().await?;
        let snapshot = self.lake.snapshot().await?;
        *held = Some((Instant::now(), snapshot.clone()));
        Ok(snapshot)
    }

    /// Seeds the coverage rollup, or counts the frames committed since it
    /// was last brought up to date. The lake is read without the lock, so
    /// renders go on meanwhile.
    async fn advance_rollup(&self) -> Result<()> {
        let step = match &*self.rollup.read().await {
            Some(rollup) => rollup.next_step(&self.lake).await?,
            None => {
                let finest =
                    Resolution::try_from(self.config.max_resolution).unwrap_or(Resolution::Ten);
                rollup::Step::Seeded(rollup::Rollup::seed(&self.lake, finest).await?)
            }
        };
        let mut held = self.rollup.write().await;
        match (step, held.as_mut()) {
            (rollup::Step::Rows(rows), Some(rollup)) => rollup.apply(&rows)?,
            (rollup::Step::Seeded(fresh), _) => *held = Some(fresh),
            (rollup::Step::Rows(_), None) => {}
        }
        Ok(())
    }

    /// Renders a tile in a session the caller holds: many tiles from one
    /// snapshot of the tables, as an export wants.
    pub async fn render_in(&self, snapshot: &Snapshot, id: TileId) -> Result<Tile> {
        self.render_with(snapshot, None, id).await
    }

    async fn render_with(
        &self,
        snapshot: &Snapshot,
        rollup: Option<&rollup::Rollup>,
        id: TileId,
    ) -> Result<Tile> {
        let ctx = RenderContext {
            snapshot,
            rollup,
            config: &self.config,
            now: (self.clock)(),
        };
        let coverage = layers::draw(&mut Coverage, &ctx, id).await?;
        let frames = layers::draw(&mut Frames, &ctx, id).await?;
        let tracks = layers::draw(&mut Tracks, &ctx, id).await?;
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

    /// Looks for uploads processed since the last look and forgets the
    /// cached tiles their published frames fall in, at every zoom; returns
    /// how many tiles were forgotten.
    pub async fn refresh(&self) -> Result<usize> {
        if let Some(forgotten) = self.refresh_hidden().await? {
            return Ok(forgotten);
        }
        let since = self.lock().processing_seen;
        let appended = self
            .lake
            .appended_since(hexroad_lake::TableName::Processing, since)
            .await?;
        let mut new = Vec::new();
        for batch in &appended.batches {
            let ids = hexroad_lake::columns::strings(batch, "upload_id")?;
            let statuses = hexroad_lake::columns::strings(batch, "status")?;
            for (id, status) in ids.iter().zip(&statuses) {
                if status == "processed"
                    && let Ok(id) = id.parse::<UploadId>()
                {
                    new.push(id);
                }
            }
        }
        if new.is_empty() {
            self.lock().processing_seen = appended.version;
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
        cache.processing_seen = appended.version;
        Ok(before - cache.tiles.len())
    }

    /// When something published was hidden since the last look (a privacy
    /// zone declared or withdrawn, a contributor forgotten), forgets every
    /// tile and recomputes which images are hidden; returns how many tiles
    /// were forgotten, or `None` when nothing changed. One HEAD otherwise.
    async fn refresh_hidden(&self) -> Result<Option<usize>> {
        let marker = self.lake.hidden_generation().await?;
        if marker.is_none() || self.lock().hidden_generation == marker {
            return Ok(None);
        }
        let hidden = self.lake.frames_hidden_by_zones().await?;
        *self.session.lock().await = None;
        *self.bounds.lock().await = None;
        let mut cache = self.lock();
        let forgotten = cache.tiles.len();
        cache.tiles.clear();
        cache.order.clear();
        cache.generation += 1;
        cache.hidden = hidden;
        cache.hidden_generation = marker;
        Ok(Some(forgotten))
    }

    /// Whether a published frame's image is withheld (privacy zone).
    pub fn is_hidden(&self, frame: &FrameId) -> bool {
        self.lock().hidden.contains(frame)
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

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// The anonymized JPEG of a published frame; `None` when no published frame
/// has this id. The key comes from the id ([`FrameId::image_key`]), so no
/// table is read, and only keys under `frames/` can be named.
pub async fn frame_image(tiles: &Tiles, frame_id: FrameId) -> Result<Option<bytes::Bytes>> {
    if tiles.is_hidden(&frame_id) {
        return Ok(None);
    }
    let key = frame_id.image_key();
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
            Coverage::describe(config),
            Frames::describe(config),
            Tracks::describe(config),
        ]
    })
}
