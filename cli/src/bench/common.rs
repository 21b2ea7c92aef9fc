//! What several benchmarks share: where the comparison runs, a lake to
//! measure in, and how latencies are summarised.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hexroad_dashcam_sim::{DeviceClient, DeviceKey, Outcome, Stats, UploadSpec};
use hexroad_lake::Lake;

/// The Python a bench runs its comparison in: `given`, `$HEXROAD_PYTHON`,
/// or the test venv that `scripts/setup --test` makes.
pub fn venv_python(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| std::env::var_os("HEXROAD_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".venv/bin/python"))
}

/// A lake to benchmark in: `keep` if given (reused across runs), else a
/// folder that goes when the returned guard is dropped.
pub async fn bench_lake(keep: Option<PathBuf>) -> Result<(tempfile::TempDir, PathBuf, Arc<Lake>)> {
    let temp = tempfile::tempdir().context("temporary data folder")?;
    let data = keep.unwrap_or_else(|| temp.path().join("data"));
    let lake = Arc::new(Lake::open(&data.to_string_lossy()).await?);
    Ok((temp, data, lake))
}

/// The `p` quantile of sorted durations, in milliseconds (0 when empty).
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * p).round() as usize)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// How many frame rows the lake holds.
pub async fn count_frames(lake: &Lake) -> Result<u64> {
    Ok(lake.frame_count().await?)
}

/// A well-behaved device client for a benchmark: 1 MiB chunks, retrying
/// for `retry_for`.
pub fn device_client<'a>(
    http: &'a reqwest::Client,
    base: &'a str,
    key: &'a DeviceKey,
    stats: &'a Stats,
    retry_for: Duration,
) -> DeviceClient<'a> {
    DeviceClient {
        http,
        server: base,
        key,
        stats,
        flaky: None,
        chunk_size: 1 << 20,
        retry_for,
        replayer: false,
    }
}

/// Uploads `spec`, which must be acknowledged (a bench measures the
/// honest path: anything else is a failure of the run).
pub async fn upload_acknowledged(c: &DeviceClient<'_>, spec: UploadSpec<'_>) -> Result<()> {
    match c.upload(spec).await? {
        Outcome::Acknowledged { .. } => Ok(()),
        out => Err(anyhow::anyhow!("bench upload not acknowledged: {out:?}")),
    }
}

/// The ingest service on a loopback port over `lake`, as `serve` runs it
/// (its public authority the address it listens on); `tune` adjusts the
/// settings. Returns its base URL and the task serving it.
pub async fn start_ingest(
    lake: &Arc<Lake>,
    scratch: PathBuf,
    tune: impl FnOnce(&mut hexroad_ingest::IngestConfig),
) -> Result<(String, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut config = hexroad_ingest::IngestConfig {
        public_authority: addr.to_string(),
        requests_per_second: 10_000.0,
        request_burst: 10_000.0,
        ..hexroad_ingest::IngestConfig::default()
    };
    tune(&mut config);
    let state = hexroad_ingest::Ingest::open(
        Arc::clone(lake),
        config,
        hexroad_ingest::system_clock(),
        scratch,
        None,
    )
    .await?;
    let server = tokio::spawn(hexroad_http::serve(
        listener,
        hexroad_ingest::app(state),
        hexroad_http::ServeLimits::default(),
        std::future::pending(),
    ));
    Ok((format!("http://{addr}"), server))
}
