//! `hexroad bench lake`: what history costs the write path. Many devices
//! upload small signed GPX tracks through the real API into one lake; the
//! acknowledgement latency over the first and the last tenth of the run,
//! sustained uploads/s, and the commits and Parquet files each table was
//! left with. `--data` keeps the lake, so runs can be stacked to build
//! history and measured beside a fresh lake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hexroad_dashcam_sim::{DeviceKey, Outcome, Stats, UploadSpec};
use hexroad_lake::Lake;

use super::common::percentile_ms;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent devices.
    #[arg(long, default_value_t = 16)]
    devices: usize,
    /// Uploads in all.
    #[arg(long, default_value_t = 800)]
    uploads: usize,
    /// GNSS fixes per track.
    #[arg(long, default_value_t = 30)]
    fixes: usize,
    /// Keep the lake here (and build on what it holds); a fresh one in a
    /// temporary folder otherwise.
    #[arg(long)]
    data: Option<PathBuf>,
}

/// A GPX track of `fixes` fixes a second apart, distinct per (device, n),
/// in the last weeks and moving at a car's pace.
fn gpx(device: usize, n: usize, fixes: usize) -> Bytes {
    let t0 = chrono::Utc::now()
        - chrono::Duration::days(2)
        - chrono::Duration::minutes((device * 10_000 + n) as i64);
    let (lat0, lon0) = (
        60.15 + (device % 10) as f64 * 0.005,
        24.90 + (n % 50) as f64 * 0.002,
    );
    let mut out = String::from(
        "<?xml version=\"1.0\"?><gpx version=\"1.1\" creator=\"bench\" \
         xmlns=\"http://www.topografix.com/GPX/1/1\"><trk><trkseg>",
    );
    for i in 0..fixes {
        let ts = t0 + chrono::Duration::seconds(i as i64);
        out.push_str(&format!(
            "<trkpt lat=\"{:.6}\" lon=\"{:.6}\"><time>{}</time></trkpt>",
            lat0 + i as f64 * 0.0001,
            lon0,
            ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    out.push_str("</trkseg></trk></gpx>");
    Bytes::from(out)
}

/// Commit files and Parquet files under a table's folder.
fn table_files(table: &Path) -> (usize, usize) {
    let commits = std::fs::read_dir(table.join("_delta_log"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0);
    let parquet = std::fs::read_dir(table)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
                .count()
        })
        .unwrap_or(0);
    (commits, parquet)
}

pub async fn run(args: Args) -> Result<()> {
    if args.devices == 0 || args.uploads < args.devices || args.fixes < 2 {
        bail!("--devices must be positive, --uploads at least --devices, --fixes at least 2");
    }
    let dir = tempfile::tempdir().context("temporary folder")?;
    let data = args.data.clone().unwrap_or_else(|| dir.path().join("data"));
    let opened = Instant::now();
    let lake = Arc::new(Lake::open(&data.to_string_lossy()).await?);
    let open_s = opened.elapsed().as_secs_f64();
    let (base, server) = super::common::start_ingest(&lake, dir.path().into(), |c| {
        c.registrations_per_second = 10_000.0;
        c.registration_burst = 10_000.0;
        c.address_registrations_per_second = 10_000.0;
        c.address_registration_burst = 10_000.0;
    })
    .await?;
    // Checkpoints off the commit path, as `serve` runs them.
    let maintenance = tokio::spawn(Arc::clone(&lake).maintain_until(std::future::pending()));
    let http = reqwest::Client::new();
    let stats = Arc::new(Stats::default());
    // A run's own keys, so stacked runs add devices and history.
    let run_salt = uuid::Uuid::new_v4();
    let keys: Vec<DeviceKey> = (0..args.devices)
        .map(|i| {
            let mut seed = *run_salt.as_bytes();
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let mut full = [0u8; 32];
            full[..16].copy_from_slice(&seed);
            full[16..].copy_from_slice(run_salt.as_bytes());
            DeviceKey::from_seed(full)
        })
        .collect();
    for (i, key) in keys.iter().enumerate() {
        super::common::device_client(&http, &base, key, &stats, Duration::from_secs(60))
            .register(&format!("bench-{i}"), "bench", "bench", None)
            .await?;
    }
    let per_device = args.uploads / args.devices;
    let acks: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::default();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (d, key) in keys.into_iter().enumerate() {
        let (http, base, stats, acks) = (
            http.clone(),
            base.clone(),
            Arc::clone(&stats),
            Arc::clone(&acks),
        );
        let fixes = args.fixes;
        let salt = run_salt.as_u128() as usize;
        tasks.spawn(async move {
            let c =
                super::common::device_client(&http, &base, &key, &stats, Duration::from_secs(60));
            for n in 0..per_device {
                let t = Instant::now();
                let out = c
                    .upload(UploadSpec {
                        kind: "gnss",
                        format: "gpx",
                        drive_id: &format!("bench-{n}"),
                        filename: "track.gpx",
                        data: gpx(d, n.wrapping_add(salt % 100_000), fixes),
                    })
                    .await?;
                if !matches!(out, Outcome::Acknowledged { .. }) {
                    return Err(anyhow::anyhow!("bench upload not acknowledged: {out:?}"));
                }
                let done = Instant::now();
                acks.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((done, done - t));
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    server.abort();
    maintenance.abort();

    let mut acks = acks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    acks.sort_by_key(|(done, _)| *done);
    let tenth = (acks.len() / 10).max(1);
    let p50_of = |slice: &[(Instant, Duration)]| {
        let mut d: Vec<Duration> = slice.iter().map(|(_, d)| *d).collect();
        d.sort();
        (percentile_ms(&d, 0.5), percentile_ms(&d, 0.99))
    };
    let (first_p50, first_p99) = p50_of(&acks[..tenth]);
    let (last_p50, last_p99) = p50_of(&acks[acks.len() - tenth..]);
    let done = acks.len();
    println!(
        "hexroad bench lake: {} devices, {done} uploads of {} fixes (GPX, signed, tus) into {}",
        args.devices,
        args.fixes,
        if args.data.is_some() {
            "the kept lake"
        } else {
            "a fresh lake"
        }
    );
    println!("  Lake::open:                        {open_s:8.2} s");
    println!(
        "  sustained:                         {:8.1} uploads/s ({done} in {elapsed:.1} s; goal ≥ 1000/s: {:.3}×)",
        done as f64 / elapsed,
        done as f64 / elapsed / 1000.0
    );
    println!("  ack p50 / p99, first tenth:        {first_p50:8.0} / {first_p99:.0} ms");
    println!("  ack p50 / p99, last tenth:         {last_p50:8.0} / {last_p99:.0} ms");
    println!(
        "  last / first tenth p50:            {:8.2}× (goal ≤ 1.3×)",
        last_p50 / first_p50.max(1e-9)
    );
    for table in ["uploads", "gnss"] {
        let (commits, parquet) = table_files(&data.join("tables").join(table));
        println!("  {table:8} commits / Parquet files: {commits:6} / {parquet}");
    }
    Ok(())
}
