//! `hexroad tiles export`: every tile with content, from one snapshot of the
//! tables, into a PMTiles v3 archive for static hosting.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use hexroad_lake::Lake;
use hexroad_tiles::{TileId, Tiles, pmtiles};

#[derive(Debug, clap::Subcommand)]
pub enum Which {
    /// Write the map's tiles to a PMTiles archive.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Data location: a folder or an object-store URL [default: ./data]
    #[arg(long)]
    data: Option<String>,
    /// The archive to write: a file, or `s3://bucket/key` (reached as the
    /// `[storage]` settings say) for a CDN to serve; replaced whole, never
    /// left half-written.
    #[arg(long)]
    out: String,
    #[arg(long, default_value_t = 0)]
    minzoom: u8,
    /// [default: tiles.maxzoom, 18]
    #[arg(long)]
    maxzoom: Option<u8>,
    /// Only tiles meeting WEST,SOUTH,EAST,NORTH (degrees).
    #[arg(long, value_parser = parse_bbox)]
    bbox: Option<[f64; 4]>,
    /// A TOML settings file (its [tiles] section is used).
    #[arg(long)]
    config: Option<PathBuf>,
}

fn parse_bbox(s: &str) -> Result<[f64; 4], String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--bbox WEST,SOUTH,EAST,NORTH in degrees: {e}"))?;
    let [w, s, e, n] = <[f64; 4]>::try_from(v)
        .map_err(|_| "--bbox takes four numbers: WEST,SOUTH,EAST,NORTH".to_owned())?;
    if !(-180.0..=180.0).contains(&w) || !(-180.0..=180.0).contains(&e) || w >= e {
        return Err("--bbox: WEST < EAST, both within -180..180".into());
    }
    if !(-90.0..=90.0).contains(&s) || !(-90.0..=90.0).contains(&n) || s >= n {
        return Err("--bbox: SOUTH < NORTH, both within -90..90".into());
    }
    Ok([w, s, e, n])
}

pub async fn run(which: Which) -> Result<()> {
    match which {
        Which::Export(args) => export(args).await,
    }
}

async fn export(args: ExportArgs) -> Result<()> {
    let mut settings = crate::settings::load_for_data(args.config.as_deref(), args.data)?;
    let maxzoom = args.maxzoom.unwrap_or(settings.tiles.maxzoom);
    if args.minzoom > maxzoom {
        bail!("--minzoom {} is above --maxzoom {maxzoom}", args.minzoom);
    }
    settings.tiles.maxzoom = settings.tiles.maxzoom.max(maxzoom);
    settings.tiles.validate().map_err(|e| e.within("tiles"))?;
    let lake = Arc::new(
        Lake::open_with(&settings.data, &settings.storage)
            .await
            .with_context(|| format!("opening data location {}", settings.data))?,
    );
    let (archive, count) = write_archive(
        lake,
        settings.tiles.clone(),
        args.minzoom,
        maxzoom,
        args.bbox,
    )
    .await?;
    let size = archive.len();
    save(&args.out, archive, &settings.storage)
        .await
        .with_context(|| format!("writing {}", args.out))?;
    println!(
        "wrote {count} tiles (zoom {}..{maxzoom}), {size} bytes, to {}",
        args.minzoom, args.out
    );
    Ok(())
}

/// Writes `bytes` to `out`, a file or an `s3://` key, all or nothing: a
/// file through a rename, a key through one upload (in parts if large),
/// which the store makes visible only once complete.
async fn save(out: &str, bytes: Vec<u8>, storage: &hexroad_lake::StorageSettings) -> Result<()> {
    if hexroad_lake::is_s3_location(out) {
        use tokio::io::AsyncWriteExt as _;
        let (store, key) = hexroad_lake::object_at(out, storage)?;
        let mut upload = hexroad_lake::object_store::buffered::BufWriter::new(store, key);
        upload.write_all(&bytes).await?;
        upload.shutdown().await?;
        return Ok(());
    }
    let out = PathBuf::from(out);
    let tmp = out.with_extension("pmtiles.part");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    Ok(())
}

/// A PMTiles archive of every tile with content from `minzoom` to `maxzoom`
/// (meeting `bbox` if given), rendered from one snapshot of the tables; and
/// how many tiles it holds.
pub async fn write_archive(
    lake: Arc<Lake>,
    config: hexroad_tiles::TilesConfig,
    minzoom: u8,
    maxzoom: u8,
    bbox: Option<[f64; 4]>,
) -> Result<(Vec<u8>, usize)> {
    let tiles = Tiles::new(Arc::clone(&lake), config.clone()).await?;
    let mut ids = tiles.tiles_with_content(minzoom, maxzoom).await?;
    if let Some([w, s, e, n]) = bbox {
        ids.retain(|t| {
            let [tw, ts, te, tn] = t.bounds();
            tw < e && te > w && ts < n && tn > s
        });
    }
    let snapshot = lake.snapshot().await?;
    let bar = indicatif::ProgressBar::new(ids.len() as u64);
    let mut writer = pmtiles::Writer::new();
    let mut rendered = futures::stream::iter(ids.iter().copied())
        .map(|id| {
            let (tiles, snapshot) = (&tiles, &snapshot);
            async move { tiles.render_in(snapshot, id).await.map(|t| (id, t)) }
        })
        .buffer_unordered(4);
    while let Some(tile) = rendered.next().await {
        let (id, tile): (TileId, _) = tile?;
        bar.inc(1);
        if !tile.bytes.is_empty() {
            writer.add(id, tile.gzip.clone());
        }
    }
    bar.finish_and_clear();
    let count = writer.len();
    let bounds = pmtiles::Bounds {
        min_zoom: minzoom,
        max_zoom: maxzoom,
        bbox: match bbox {
            Some(b) => b,
            None => tiles
                .data_bounds()
                .await?
                .unwrap_or([-180.0, -85.0, 180.0, 85.0]),
        },
    };
    let mut metadata = hexroad_tiles::tilejson(&config, &[]);
    if let Some(map) = metadata.as_object_mut() {
        map.remove("tiles");
        map.insert("type".into(), "overlay".into());
        map.insert("format".into(), "pbf".into());
    }
    Ok((writer.finish(&bounds, &metadata), count))
}
