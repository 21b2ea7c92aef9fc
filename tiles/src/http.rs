//! The map's HTTP surface: `GET /tiles/{z}/{x}/{y}.mvt`, `GET /tiles.json`
//! (TileJSON 3.0), `GET /frames/{frame_id}.jpg` (anonymized frames only),
//! and the web map at `/` with MapLibre GL JS served from the set-up's copy.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use hexroad_http::ApiError;

use crate::{Error, TileId, Tiles};

/// The web map page, its script and its style: files, never inline, so
/// the page's policy can refuse inline script.
const INDEX_HTML: &str = include_str!("map.html");
const APP_JS: &str = include_str!("map.js");
const APP_CSS: &str = include_str!("map.css");

/// What every answer but the page may load or be embedded by: nothing.
const STRICT_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

struct Shared {
    tiles: Arc<Tiles>,
    /// The page's Content-Security-Policy.
    page_policy: HeaderValue,
    /// `node_modules/maplibre-gl/dist` as the set-up installed it.
    maplibre: PathBuf,
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    ApiError::new(status, code, message).into_response()
}

/// The map routes, to merge into a server's router.
pub fn router(tiles: Arc<Tiles>) -> Router {
    let maplibre = tiles.config().maplibre.clone();
    let page_policy = page_policy(&tiles.config().public_url);
    let shared = Arc::new(Shared {
        tiles,
        page_policy,
        maplibre,
    });
    Router::new()
        .route("/", get(index))
        .route("/tiles.json", get(tilejson))
        .route("/tiles/{z}/{x}/{file}", get(tile))
        .route("/frames/{file}", get(frame))
        .route("/map/{file}", get(asset))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(shared)
}

/// No answer is sniffed as another type, no page of the map may be framed
/// by another site, and nothing but the page may load anything.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(STRICT_POLICY),
        );
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// The page's policy: script and style from this origin only (no inline
/// script), MapLibre's workers from here or a blob, images from here,
/// tiles from here or the configured public URL.
fn page_policy(public_url: &str) -> HeaderValue {
    let origin = public_url
        .split_once("://")
        .map(|(scheme, rest)| format!("{scheme}://{}", rest.split('/').next().unwrap_or("")))
        .filter(|o| {
            o.bytes()
                .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
        })
        .unwrap_or_default();
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         connect-src 'self' {origin}; worker-src 'self' blob:; child-src 'self' blob:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static(STRICT_POLICY))
}

async fn index(State(shared): State<Arc<Shared>>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::CONTENT_SECURITY_POLICY, shared.page_policy.clone()),
        ],
        INDEX_HTML,
    )
        .into_response()
}

async fn asset(State(shared): State<Arc<Shared>>, Path(file): Path<String>) -> Response {
    let own = match file.as_str() {
        "app.js" => Some(("text/javascript", APP_JS)),
        "app.css" => Some(("text/css", APP_CSS)),
        _ => None,
    };
    if let Some((content_type, text)) = own {
        return (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            text,
        )
            .into_response();
    }
    let content_type = match file.as_str() {
        "maplibre-gl.mjs" | "maplibre-gl-worker.mjs" => "text/javascript",
        "maplibre-gl.css" => "text/css",
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no asset {file}"),
            );
        }
    };
    let path = shared.maplibre.join(&file);
    match tokio::fs::read(&path).await {
        // A worker runs under its own script's policy, not the page's:
        // MapLibre's worker fetches tiles, so it gets the page's.
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=86400"),
                ),
                (header::CONTENT_SECURITY_POLICY, shared.page_policy.clone()),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "map_not_installed",
            format!(
                "{}: {e}; scripts/setup installs MapLibre GL JS from npm",
                path.display()
            ),
        ),
    }
}

/// The scheme and host the client used, for absolute URLs in TileJSON.
async fn tilejson(State(shared): State<Arc<Shared>>) -> Response {
    let config = shared.tiles.config();
    let base = config.public_url.trim_end_matches('/');
    let mut doc = crate::tilejson(config, &[format!("{base}/tiles/{{z}}/{{x}}/{{y}}.mvt")]);
    // hexroad's own fields: where the data is, and the tiles' version.
    match shared.tiles.data_bounds().await {
        Ok(Some([w, s, e, n])) => {
            doc["data_bounds"] = serde_json::json!([w, s, e, n]);
            doc["center"] = serde_json::json!([(w + e) / 2.0, (s + n) / 2.0, 14]);
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "data bounds for TileJSON"),
    }
    doc["version"] = shared.tiles.version().into();
    ([(header::CACHE_CONTROL, "no-cache")], axum::Json(doc)).into_response()
}

async fn tile(
    State(shared): State<Arc<Shared>>,
    Path((z, x, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let parsed = (|| {
        let y = file.strip_suffix(".mvt")?;
        TileId::new(z.parse().ok()?, x.parse().ok()?, y.parse().ok()?)
    })();
    let Some(id) = parsed else {
        return error(
            StatusCode::NOT_FOUND,
            "no_such_tile",
            format!(
                "/tiles/{z}/{x}/{file}: expected /tiles/Z/X/Y.mvt with X and Y below 2^Z, Z at most 24"
            ),
        );
    };
    let tile = match shared.tiles.tile(id).await {
        Ok(t) => t,
        Err(e @ Error::NoSuchTile { .. }) => {
            return error(StatusCode::NOT_FOUND, "no_such_tile", e.to_string());
        }
        Err(e @ Error::Busy { retry_after_s }) => {
            return ApiError::unavailable("busy", e.to_string(), retry_after_s).into_response();
        }
        Err(e) => {
            let context = format!("rendering tile {}/{}/{}", id.z, id.x, id.y);
            return ApiError::internal(&context, &e).into_response();
        }
    };
    let etag = HeaderValue::from_str(&tile.etag).unwrap_or(HeaderValue::from_static("\"\""));
    let cache = (
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == tile.etag || t.trim() == "*")
        })
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag), cache]).into_response();
    }
    let gzip = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let content_type = (
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.mapbox-vector-tile"),
    );
    let vary = (header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzip {
        (
            [
                content_type,
                (header::CONTENT_ENCODING, HeaderValue::from_static("gzip")),
                (header::ETAG, etag),
                cache,
                vary,
            ],
            tile.gzip.clone(),
        )
            .into_response()
    } else {
        (
            [content_type, (header::ETAG, etag), cache, vary],
            tile.bytes.clone(),
        )
            .into_response()
    }
}

async fn frame(State(shared): State<Arc<Shared>>, Path(file): Path<String>) -> Response {
    // Only a frame id (a lowercase UUID) can name a frame; anything else
    // never reaches the lake or the store.
    let Some(id) = file
        .strip_suffix(".jpg")
        .and_then(|id| id.parse::<hexroad_wire::FrameId>().ok())
    else {
        return error(
            StatusCode::NOT_FOUND,
            "no_such_frame",
            format!("/frames/{file}: expected /frames/<frame_id>.jpg"),
        );
    };
    match crate::frame_image(&shared.tiles, id).await {
        Ok(Some(bytes)) => (
            [
                (header::CONTENT_TYPE, "image/jpeg"),
                (header::CACHE_CONTROL, "public, max-age=86400, immutable"),
            ],
            bytes,
        )
            .into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "no_such_frame",
            format!("no published frame {id}"),
        ),
        Err(e) => ApiError::internal(&format!("reading frame {id}"), &e).into_response(),
    }
}
