//! `hexroad bench tiles`: z10–z16 tile requests under concurrent load over
//! loopback, cold (rendered from the lake) and cached, beside martin (the
//! MapLibre tile server, from crates.io) serving the exported PMTiles
//! archive of the same tiles, all in this run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use hexroad_tiles::{TileId, Tiles, TilesConfig};
use rand::SeedableRng;
use rand::seq::IndexedRandom;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Frame rows to generate around Helsinki.
    #[arg(long, default_value_t = 300_000)]
    rows: usize,
    /// Requests in each measured pass.
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Keep the generated lake here and reuse it [default: a temporary folder]
    #[arg(long)]
    data: Option<PathBuf>,
    /// martin's binary [default: `martin` on PATH, datasets/tools/bin/martin
    /// (scripts/setup --bench), or ~/.cargo/bin/martin]
    #[arg(long)]
    martin: Option<PathBuf>,
}

struct Pass {
    tiles_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    bytes: u64,
}

/// Requests every URL, `concurrency` at a time, and times each.
async fn pass(http: &reqwest::Client, urls: &[String], concurrency: usize) -> Result<Pass> {
    let t0 = Instant::now();
    let results: Vec<Result<(Duration, u64)>> = futures::stream::iter(urls.iter().cloned())
        .map(|url| {
            let http = http.clone();
            async move {
                let t = Instant::now();
                let r = http
                    .get(&url)
                    .header("accept-encoding", "gzip")
                    .send()
                    .await
                    .with_context(|| format!("GET {url}"))?;
                let status = r.status();
                let body = r.bytes().await?;
                // martin answers 204 for an empty tile; both are fine.
                if !(status.is_success()) {
                    bail!("GET {url}: {status}");
                }
                Ok((t.elapsed(), body.len() as u64))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = t0.elapsed().as_secs_f64();
    let mut times = Vec::with_capacity(results.len());
    let mut bytes = 0;
    for r in results {
        let (t, n) = r?;
        times.push(t);
        bytes += n;
    }
    times.sort();
    let pct = |p: f64| super::common::percentile_ms(&times, p);
    Ok(Pass {
        tiles_per_s: urls.len() as f64 / elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        bytes,
    })
}

fn martin_binary(given: Option<PathBuf>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("martin"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("datasets/tools/bin/martin")).filter(|p| p.is_file()))
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cargo/bin/martin"))
                .filter(|p| p.is_file())
        })
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// martin serving the exported archive: the second pass over the sample
/// (the first reads the archive into the page cache).
async fn martin_pass(
    bin: &Path,
    pmtiles: &Path,
    http: &reqwest::Client,
    sample: &[TileId],
    concurrency: usize,
) -> Result<Pass> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let child = Command::new(bin)
        .arg("--listen-addresses")
        .arg(format!("127.0.0.1:{port}"))
        .arg(pmtiles)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let child = Killed(child);
    let base = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    while http.get(format!("{base}/catalog")).send().await.is_err() {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("martin did not start on {base}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let theirs = |t: &TileId| format!("{base}/hexroad/{}/{}/{}", t.z, t.x, t.y);
    let urls: Vec<String> = sample.iter().map(theirs).collect();
    // The first pass reads the archive into the page cache.
    pass(http, &urls, concurrency).await?;
    let warm = pass(http, &urls, concurrency).await?;
    drop(child);
    Ok(warm)
}

pub async fn run(args: Args) -> Result<()> {
    if args.rows == 0 || args.requests == 0 || args.concurrency == 0 {
        bail!("--rows, --requests and --concurrency must be positive");
    }
    let (temp, data, lake) = super::common::bench_lake(args.data.clone()).await?;
    if super::common::count_frames(&lake).await? == 0 {
        super::synthetic::generate(
            &lake,
            args.rows,
            (args.rows / 500).max(1),
            30,
            chrono::Utc::now(),
        )
        .await?;
    }
    let config = TilesConfig::default();
    let tiles = Arc::new(Tiles::new(Arc::clone(&lake), config.clone()).await?);
    let ids: Vec<TileId> = tiles.tiles_with_content(10, 16).await?;
    if ids.is_empty() {
        bail!("no tiles with content in {}", data.display());
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let sample: Vec<TileId> = (0..args.requests)
        .filter_map(|_| ids.choose(&mut rng).copied())
        .collect();

    // hexroad: cold (every distinct tile rendered once), then cached.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = hexroad_tiles::http::router(Arc::clone(&tiles));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let ours = |t: &TileId| format!("http://{addr}/tiles/{}/{}/{}.mvt", t.z, t.x, t.y);
    let mut distinct = sample.clone();
    distinct.sort();
    distinct.dedup();
    let cold = pass(
        &http,
        &distinct.iter().map(ours).collect::<Vec<_>>(),
        args.concurrency,
    )
    .await?;
    let cached = pass(
        &http,
        &sample.iter().map(ours).collect::<Vec<_>>(),
        args.concurrency,
    )
    .await?;
    server.abort();

    // martin on the exported archive of the same zooms (exported only
    // when there is a martin to serve it: the export renders every tile).
    let martin = match martin_binary(args.martin.clone()) {
        None => None,
        Some(bin) => {
            let (archive, count) =
                crate::tiles::write_archive(Arc::clone(&lake), config, 10, 16, None).await?;
            let pmtiles = temp.path().join("hexroad.pmtiles");
            std::fs::write(&pmtiles, &archive)?;
            let warm = martin_pass(&bin, &pmtiles, &http, &sample, args.concurrency).await?;
            Some((bin, warm, count))
        }
    };

    println!(
        "hexroad bench tiles: {} requests of {} distinct z10-z16 tiles, {} at a time, over loopback",
        sample.len(),
        distinct.len(),
        args.concurrency
    );
    println!(
        "  {:<40} {:>10} {:>9} {:>9} {:>10}",
        "", "tiles/s", "p50 ms", "p99 ms", "KB/tile"
    );
    let row = |name: &str, p: &Pass, n: usize| {
        println!(
            "  {:<40} {:>10.0} {:>9.2} {:>9.2} {:>10.1}",
            name,
            p.tiles_per_s,
            p.p50_ms,
            p.p99_ms,
            p.bytes as f64 / n as f64 / 1e3
        );
    };
    row(
        "hexroad, cold (rendered from the lake)",
        &cold,
        distinct.len(),
    );
    row("hexroad, cached", &cached, sample.len());
    match &martin {
        Some((bin, warm, count)) => {
            row("martin, the exported PMTiles", warm, sample.len());
            println!(
                "  hexroad cached / martin: {:.2}× the tiles/s, p99 {:.2}× ({}; {count} tiles in the archive)",
                cached.tiles_per_s / warm.tiles_per_s,
                cached.p99_ms / warm.p99_ms.max(1e-6),
                bin.display()
            );
        }
        None => println!(
            "  martin: not measured (not found; scripts/setup --bench builds it, or give --martin PATH)"
        ),
    }
    Ok(())
}
