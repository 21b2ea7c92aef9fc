//! `hexroad bench ingest`: upload throughput over loopback, beside a plain
//! file copy of the same bytes, measured in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hexroad_dashcam_sim::{DeviceClient, DeviceKey, Stats, UploadSpec};
use hexroad_lake::Lake;

use super::common::percentile_ms;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent devices.
    #[arg(long, default_value_t = 16)]
    devices: usize,
    /// Uploads per device.
    #[arg(long, default_value_t = 2)]
    uploads: usize,
    /// Size of each upload, MiB.
    #[arg(long, default_value_t = 8)]
    size_mib: usize,
}

/// A telemetry batch of about `size` bytes, distinct per (device, n).
pub(super) fn batch(device: usize, n: usize, size: usize) -> Bytes {
    // Each batch an hour of its own in the last weeks: distinct, in order, never in the future.
    let t0 = chrono::Utc::now()
        - chrono::Duration::days(1)
        - chrono::Duration::hours((device * 100 + n) as i64);
    let mut out = String::with_capacity(size + 128);
    let mut i = 0i64;
    while out.len() < size {
        let ts = t0 + chrono::Duration::milliseconds(i * 10);
        out.push_str(&format!(
            "{{\"ts\":\"{}\",\"signal\":\"Vehicle.Speed\",\"value\":{}.{}}}\n",
            ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            i % 130,
            (device + n) % 10
        ));
        i += 1;
    }
    Bytes::from(out)
}

pub async fn run(args: Args) -> Result<()> {
    if args.devices == 0 || args.uploads == 0 || args.size_mib == 0 {
        bail!("--devices, --uploads and --size-mib must be positive");
    }
    let dir = tempfile::tempdir().context("temporary data folder")?;
    let data = dir.path().join("data");
    let lake = Arc::new(Lake::open(&data.to_string_lossy()).await?);
    let (base, server) = super::common::start_ingest(&lake, dir.path().into(), |_| {}).await?;
    let size = args.size_mib << 20;
    let payloads: Vec<Vec<Bytes>> = (0..args.devices)
        .map(|d| (0..args.uploads).map(|n| batch(d, n, size)).collect())
        .collect();
    let total: u64 = payloads.iter().flatten().map(|b| b.len() as u64).sum();

    // The alternative: the same bytes written to files and copied once.
    let copy_dir = dir.path().join("copy");
    std::fs::create_dir_all(&copy_dir)?;
    let sources: Vec<_> = payloads
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, b)| {
            let p = copy_dir.join(format!("src-{i}"));
            std::fs::write(&p, b).map(|()| p)
        })
        .collect::<Result<_, _>>()?;
    let copy_started = Instant::now();
    for (i, src) in sources.iter().enumerate() {
        let dst = copy_dir.join(format!("dst-{i}"));
        std::fs::copy(src, &dst)?;
        std::fs::File::open(&dst)?.sync_all()?;
    }
    let copy_s = copy_started.elapsed().as_secs_f64();

    let http = reqwest::Client::new();
    let stats = Arc::new(Stats::default());
    let keys: Vec<DeviceKey> = (0..args.devices)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            DeviceKey::from_seed(seed)
        })
        .collect();
    for (i, key) in keys.iter().enumerate() {
        client(&http, &base, key, &stats)
            .register(&format!("bench-{i}"), "bench", "bench", None)
            .await?;
    }
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (key, uploads) in keys.into_iter().zip(payloads) {
        let (http, base, stats) = (http.clone(), base.clone(), Arc::clone(&stats));
        tasks.spawn(async move {
            let c = client(&http, &base, &key, &stats);
            for (n, data) in uploads.into_iter().enumerate() {
                super::common::upload_acknowledged(
                    &c,
                    UploadSpec {
                        kind: "telemetry",
                        format: "ndjson",
                        drive_id: &format!("bench-{n}"),
                        filename: "bench.ndjson",
                        data,
                    },
                )
                .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let upload_s = started.elapsed().as_secs_f64();
    server.abort();

    let mut times = stats
        .chunk_times
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    times.sort();
    let pct = |p: f64| percentile_ms(&times, p);
    let mb = total as f64 / 1e6;
    let upload_mbs = mb / upload_s;
    let copy_mbs = mb / copy_s;
    println!(
        "hexroad bench ingest: {} devices × {} uploads × {} MiB over loopback",
        args.devices, args.uploads, args.size_mib
    );
    println!(
        "  signed tus upload, validated and committed: {upload_mbs:8.1} MB/s ({mb:.0} MB in {upload_s:.2} s)"
    );
    println!("  plain file copy of the same bytes (+fsync): {copy_mbs:8.1} MB/s ({copy_s:.2} s)");
    println!(
        "  ratio upload / copy (the limit):            {:8.3}",
        upload_mbs / copy_mbs
    );
    println!(
        "  per 1 MiB chunk PATCH: p50 {:.1} ms, p99 {:.1} ms ({} chunks)",
        pct(0.5),
        pct(0.99),
        times.len()
    );
    Ok(())
}

fn client<'a>(
    http: &'a reqwest::Client,
    base: &'a str,
    key: &'a DeviceKey,
    stats: &'a Stats,
) -> DeviceClient<'a> {
    super::common::device_client(http, base, key, stats, Duration::from_secs(30))
}
