//! The three layers of a hexroad tile, each one [`Layer`]: what it reads from
//! a snapshot of the lake, the features it draws, and how TileJSON describes
//! it. The cache and the HTTP surface know only the trait.

use chrono::{DateTime, Utc};
use h3o::Resolution;
use std::collections::HashMap;

use hexroad_lake::{BoundingBox, DriveEnds, Snapshot};
use hexroad_wire::UploadId;
use hexroad_wire::grid::haversine_m;

use crate::{BUFFER, EXTENT, Result, TileId, TilesConfig, mercator, mvt};

/// What a render knows besides the tile: the settings, and the time the
/// tile is made at (for `freshness_days`), passed in so a test can fix it.
pub struct RenderContext<'a> {
    pub snapshot: &'a Snapshot,
    /// Coverage per cell, when the tile server keeps it; the snapshot's
    /// frames are counted otherwise.
    pub(crate) rollup: Option<&'a crate::rollup::Rollup>,
    pub config: &'a TilesConfig,
    pub now: DateTime<Utc>,
}

/// One layer of the vector tile.
pub(crate) trait Layer {
    /// The MVT layer name, also its TileJSON id.
    const NAME: &'static str;

    /// The lowest zoom the layer draws at.
    fn minzoom(config: &TilesConfig) -> u8;

    /// The layer's TileJSON entry.
    fn describe(config: &TilesConfig) -> serde_json::Value;

    /// Draws the layer's features in tile `id` into `out`.
    async fn draw(
        &mut self,
        ctx: &RenderContext<'_>,
        id: TileId,
        out: &mut mvt::Layer,
    ) -> Result<()>;
}

/// The tile's drawable range, buffer included, in tile units.
fn range() -> std::ops::Range<f64> {
    -f64::from(BUFFER)..f64::from(EXTENT + BUFFER)
}

/// The tile's bounds widened by `margin_m` metres and the tile buffer.
pub(crate) fn widen(id: TileId, margin_m: f64) -> BoundingBox {
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

/// H3 hexagons with published frames, at the zoom's resolution.
pub(crate) struct Coverage;

impl Layer for Coverage {
    const NAME: &'static str = "coverage";

    fn minzoom(_: &TilesConfig) -> u8 {
        0
    }

    fn describe(config: &TilesConfig) -> serde_json::Value {
        serde_json::json!({
            "id": Self::NAME,
            "description": "H3 hexagons with published frames; the resolution follows the zoom",
            "minzoom": Self::minzoom(config),
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
        })
    }

    /// Every published frame of every cell that reaches into the (buffered)
    /// tile counts, so a hexagon cut by the tile edge shows its whole count.
    async fn draw(
        &mut self,
        ctx: &RenderContext<'_>,
        id: TileId,
        out: &mut mvt::Layer,
    ) -> Result<()> {
        let res = Resolution::try_from(ctx.config.resolution(id.z)).unwrap_or(Resolution::Zero);
        let margin_m = 2.5 * res.edge_length_m();
        let (lo, hi) = (range().start, range().end);
        let mut cells = match ctx.rollup {
            Some(rollup) if rollup.finest() >= res => rollup.coverage_in(widen(id, 0.0), res),
            _ => ctx.snapshot.coverage_in(widen(id, margin_m), res).await?,
        };
        // In cell order, whatever order a query grouped them in: the same
        // content always makes the same bytes (and ETag).
        cells.sort_by_key(|c| c.cell);
        for c in cells {
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
            let age_days = (ctx.now - c.last_seen).num_seconds() as f64 / 86_400.0;
            out.add(
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
                        mvt::Value::Double((age_days * 100.0).round() / 100.0),
                    ),
                ],
            );
        }
        Ok(())
    }
}

/// Published frames, one point each with what the map needs to open it.
pub(crate) struct Frames;

impl Layer for Frames {
    const NAME: &'static str = "frames";

    fn minzoom(config: &TilesConfig) -> u8 {
        config.frames_minzoom
    }

    fn describe(config: &TilesConfig) -> serde_json::Value {
        serde_json::json!({
            "id": Self::NAME,
            "description": "Published (anonymized) frames",
            "minzoom": Self::minzoom(config),
            "maxzoom": config.maxzoom,
            "fields": {
                "frame_id": "String",
                "ts": "String: capture time, RFC 3339",
                "heading": "Number: degrees clockwise from north",
                "image_url": "String: the anonymized JPEG, relative to the server"
            }
        })
    }

    async fn draw(
        &mut self,
        ctx: &RenderContext<'_>,
        id: TileId,
        out: &mut mvt::Layer,
    ) -> Result<()> {
        let points = ctx.snapshot.frames_in(widen(id, 0.0)).await?;
        let range = range();
        for f in &points {
            let p = id.project(f.lat, f.lon, EXTENT);
            if !range.contains(&p[0]) || !range.contains(&p[1]) {
                continue;
            }
            out.add(
                None,
                &mvt::Geometry::Points(vec![[p[0].round() as i32, p[1].round() as i32]]),
                &[
                    ("frame_id", mvt::Value::String(f.frame_id.to_string())),
                    ("ts", mvt::Value::String(iso(f.ts))),
                    ("heading", mvt::Value::Double(f.heading)),
                    (
                        "image_url",
                        mvt::Value::String(format!("/frames/{}.jpg", f.frame_id)),
                    ),
                ],
            );
        }
        Ok(())
    }
}

/// Accepted drives as lines, with nothing that names a driver: no device,
/// contributor or upload, no fix within `privacy_radius_m` of where a drive
/// began or ended (homes), and no detail finer than `track_tolerance_m`.
pub(crate) struct Tracks;

impl Layer for Tracks {
    const NAME: &'static str = "tracks";

    fn minzoom(config: &TilesConfig) -> u8 {
        config.tracks_minzoom
    }

    fn describe(config: &TilesConfig) -> serde_json::Value {
        serde_json::json!({
            "id": Self::NAME,
            "description": "Where drives went, simplified, without their ends and without who drove",
            "minzoom": Self::minzoom(config),
            "maxzoom": config.maxzoom,
            "fields": {}
        })
    }

    async fn draw(
        &mut self,
        ctx: &RenderContext<'_>,
        id: TileId,
        out: &mut mvt::Layer,
    ) -> Result<()> {
        let area = widen(id, 200.0);
        let ends: HashMap<UploadId, DriveEnds> = ctx
            .snapshot
            .drive_ends_near(area)
            .await?
            .into_iter()
            .map(|e| (e.upload_id, e))
            .collect();
        let radius = ctx.config.privacy_radius_m;
        let private = |upload: &UploadId, at: (f64, f64)| {
            ends.get(upload).is_none_or(|e| {
                haversine_m(e.start, at) < radius || haversine_m(e.end, at) < radius
            })
        };
        // Lines break where a fix is withheld, so no segment reaches an end.
        let mut lines: Vec<(UploadId, Vec<[f64; 2]>)> = Vec::new();
        let mut broken = true;
        for fix in ctx.snapshot.track_fixes_in(area).await? {
            if private(&fix.upload_id, (fix.lat, fix.lon)) {
                broken = true;
                continue;
            }
            let p = id.project(fix.lat, fix.lon, EXTENT);
            match lines.last_mut() {
                Some((u, pts)) if *u == fix.upload_id && !broken => pts.push(p),
                _ => lines.push((fix.upload_id, vec![p])),
            }
            broken = false;
        }
        let [w, _, e, _] = id.bounds();
        let metres_per_unit = (e - w) * 111_320.0 * id_lat_cos(id) / f64::from(EXTENT);
        let tolerance = (f64::from(EXTENT) / 256.0 / 2.0)
            .max(ctx.config.track_tolerance_m / metres_per_unit.max(1e-9));
        let (lo, hi) = (range().start, range().end);
        let parts: Vec<Vec<[i32; 2]>> = lines
            .iter()
            .filter(|(_, pts)| pts.len() > 1)
            .flat_map(|(_, pts)| mercator::clip_line(&mercator::simplify(pts, tolerance), lo, hi))
            .map(|p| round(&p))
            .collect();
        if !parts.is_empty() {
            out.add(None, &mvt::Geometry::Lines(parts), &[]);
        }
        Ok(())
    }
}

/// The cosine of a tile's middle latitude: metres per degree of longitude
/// shrink with it.
fn id_lat_cos(id: TileId) -> f64 {
    let [_, s, _, n] = id.bounds();
    ((s + n) / 2.0).to_radians().cos()
}

/// Draws `layer` into a fresh MVT layer when the zoom reaches it.
pub(crate) async fn draw<L: Layer>(
    layer: &mut L,
    ctx: &RenderContext<'_>,
    id: TileId,
) -> Result<mvt::Layer> {
    let mut out = mvt::Layer::new(L::NAME, EXTENT);
    if id.z >= L::minzoom(ctx.config) {
        layer.draw(ctx, id, &mut out).await?;
    }
    Ok(out)
}
