//! `hexroad bench lake`: what history costs the write path. Many devices
//! upload small signed GPX tracks through the real API: first `--history`
//! uploads into one lake (its history, built through the same path as any
//! upload, maintenance running beside as in `serve`), then the same probe
//! of `--uploads` into that lake and into a fresh one, in the same run.
//! Prints ack p50/p99 of both and their ratio, sustained uploads/s,
//! `Lake::open` time and memory over the history, and the commits and
//! Parquet files per table before and after a maintenance pass. `--data`
//! keeps the history lake, so runs can be stacked; `--bulk-history`
//! lays a large history down through the lake's commit path instead.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hexroad_dashcam_sim::{DeviceKey, Stats, UploadSpec};
use hexroad_lake::Lake;

use super::common::percentile_ms;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent devices.
    #[arg(long, default_value_t = 16)]
    devices: usize,
    /// Uploads of history to build before the probe (0: measure the lake
    /// as it is).
    #[arg(long, default_value_t = 4000)]
    history: usize,
    /// Uploads in each probe (into the history lake and a fresh one).
    #[arg(long, default_value_t = 800)]
    uploads: usize,
    /// Uploads of history laid down through the lake's own commit path
    /// (`commit_upload`, 2,000 at once so they share group commits, with
    /// maintenance running beside as in `serve`) instead of the API, for a
    /// history of a million uploads in minutes: accepted GPX uploads of
    /// `--fixes` fixes.
    #[arg(long, default_value_t = 0)]
    bulk_history: usize,
    /// GNSS fixes per track.
    #[arg(long, default_value_t = 30)]
    fixes: usize,
    /// Keep the history lake here (and build on what it holds); a
    /// temporary folder otherwise.
    #[arg(long)]
    data: Option<PathBuf>,
}

/// A GPX track of `fixes` fixes a second apart, distinct per (device, n),
/// in the last weeks and moving at a car's pace: [`track_points`] as a
/// device sends them.
fn gpx(device: usize, n: usize, fixes: usize) -> Bytes {
    let mut out = String::from(
        "<?xml version=\"1.0\"?><gpx version=\"1.1\" creator=\"bench\" \
         xmlns=\"http://www.topografix.com/GPX/1/1\"><trk><trkseg>",
    );
    for p in track_points(device, n, fixes, 2) {
        out.push_str(&format!(
            "<trkpt lat=\"{:.6}\" lon=\"{:.6}\"><time>{}</time></trkpt>",
            p.lat,
            p.lon,
            p.ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    out.push_str("</trkseg></trk></gpx>");
    Bytes::from(out)
}

/// Uploads laid down at once by `--bulk-history`: they share group commits.
const BULK_PER_ROUND: usize = 2_000;

/// Lays down `uploads` accepted GPX uploads with their fixes through the
/// lake's own commit path (`commit_upload`, the group commit every
/// accepted upload goes through), [`BULK_PER_ROUND`] at a time, with
/// maintenance running beside as in `serve` (so the tables hold what a
/// long-running network's would: few large files, not one per commit),
/// then one last maintenance pass; returns the seconds taken.
async fn lay_down(lake: &Arc<Lake>, uploads: usize, devices: usize, fixes: usize) -> Result<f64> {
    use hexroad_lake::{UploadRecord, UploadStatus};
    use sha2::Digest as _;
    let t = Instant::now();
    let salt = uuid::Uuid::new_v4().as_u128();
    let contributor: hexroad_wire::ContributorId = "bench-history@example.org".parse()?;
    let devices = devices.max(1);
    let bar = indicatif::ProgressBar::new(uploads as u64);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let maintenance = tokio::spawn(Arc::clone(lake).maintain_until(
        hexroad_lake::Maintenance::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut n = 0;
    while n < uploads {
        let take = BULK_PER_ROUND.min(uploads - n);
        let mut round = tokio::task::JoinSet::new();
        for i in n..n + take {
            let device = hexroad_wire::DeviceId::from_public_key(&[(i % devices) as u8; 32]);
            let id = hexroad_wire::UploadId(uuid::Uuid::from_u128(salt ^ i as u128));
            let points = track_points(i % devices, i / devices, fixes, 30);
            let record = UploadRecord {
                upload_id: id,
                device_id: device.clone(),
                contributor_id: contributor.clone(),
                kind: hexroad_wire::UploadKind::Gnss,
                format: "gpx".into(),
                drive_id: Some(format!("history-{i}")),
                bytes: 100 * fixes as u64,
                sha256: hex::encode(sha2::Sha256::digest(id.0.as_bytes())),
                object_key: format!("raw/{}/{id}", device.as_str()),
                received_at: points[0].ts,
                status: UploadStatus::Accepted,
                reject_reason: None,
                duplicate_of: None,
                media: None,
            };
            let lake = Arc::clone(lake);
            round.spawn(async move { lake.commit_upload(record, &points, &[]).await });
        }
        while let Some(done) = round.join_next().await {
            done??;
        }
        n += take;
        bar.set_position(n as u64);
    }
    bar.finish_and_clear();
    // A pass in progress finishes; the loop stops at its next turn.
    let _ = stop.send(());
    maintenance.await?;
    lake.maintain(&hexroad_lake::Maintenance {
        checkpoint_every: 1,
        ..Default::default()
    })
    .await?;
    Ok(t.elapsed().as_secs_f64())
}

/// The fixes of track `(device, n)`, starting `days_back` days (and a few
/// minutes per device and track) ago.
fn track_points(
    device: usize,
    n: usize,
    fixes: usize,
    days_back: i64,
) -> Vec<hexroad_wire::GnssPoint> {
    let t0 = chrono::Utc::now()
        - chrono::Duration::days(days_back)
        - chrono::Duration::minutes((device * 10_000 + n) as i64);
    let (lat0, lon0) = (
        60.15 + (device % 10) as f64 * 0.005,
        24.90 + (n % 50) as f64 * 0.002,
    );
    (0..fixes)
        .map(|i| hexroad_wire::GnssPoint {
            ts: t0 + chrono::Duration::seconds(i as i64),
            lat: lat0 + i as f64 * 0.0001,
            lon: lon0,
            alt: None,
            speed: None,
            heading: None,
            hdop: None,
        })
        .collect()
}

/// Commit files and live Parquet files of a table (the latter from its
/// snapshot: replaced files wait for vacuum and are not counted).
async fn table_files(
    lake: &Lake,
    data: &Path,
    table: hexroad_lake::TableName,
) -> Result<(usize, usize)> {
    let log = data.join("tables").join(table.as_str()).join("_delta_log");
    let commits = std::fs::read_dir(log)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0);
    Ok((commits, lake.data_files(table).await?))
}

/// What one stretch of uploads measured.
struct Drive {
    /// When each upload was acknowledged and how long it took, in order.
    acks: Vec<(Instant, Duration)>,
    elapsed_s: f64,
}

impl Drive {
    fn rate(&self) -> f64 {
        self.acks.len() as f64 / self.elapsed_s.max(1e-9)
    }

    /// p50 and p99 (ms) of a slice of the acknowledgements.
    fn quantiles(slice: &[(Instant, Duration)]) -> (f64, f64) {
        let mut d: Vec<Duration> = slice.iter().map(|(_, d)| *d).collect();
        d.sort();
        (percentile_ms(&d, 0.5), percentile_ms(&d, 0.99))
    }

    fn all(&self) -> (f64, f64) {
        Self::quantiles(&self.acks)
    }

    fn first_tenth(&self) -> (f64, f64) {
        Self::quantiles(&self.acks[..(self.acks.len() / 10).max(1)])
    }

    fn last_tenth(&self) -> (f64, f64) {
        let tenth = (self.acks.len() / 10).max(1);
        Self::quantiles(&self.acks[self.acks.len() - tenth..])
    }
}

/// `uploads` small uploads from `devices` new devices into `lake` through
/// the real ingest API, maintenance running beside as `serve` runs it.
async fn drive(
    lake: &Arc<Lake>,
    scratch: &Path,
    devices: usize,
    uploads: usize,
    fixes: usize,
) -> Result<Drive> {
    let (base, server) = super::common::start_ingest(lake, scratch.into(), |c| {
        c.registrations_per_second = 10_000.0;
        c.registration_burst = 10_000.0;
        c.address_registrations_per_second = 10_000.0;
        c.address_registration_burst = 10_000.0;
    })
    .await?;
    let maintenance = tokio::spawn(
        Arc::clone(lake)
            .maintain_until(hexroad_lake::Maintenance::default(), std::future::pending()),
    );
    let http = reqwest::Client::new();
    let stats = Arc::new(Stats::default());
    // Each stretch its own keys, so stacked runs add devices and history.
    let run_salt = uuid::Uuid::new_v4();
    let keys: Vec<DeviceKey> = (0..devices)
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
    let per_device = uploads / devices;
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
        let salt = run_salt.as_u128() as usize;
        tasks.spawn(async move {
            let c =
                super::common::device_client(&http, &base, &key, &stats, Duration::from_secs(60));
            for n in 0..per_device {
                let t = Instant::now();
                super::common::upload_acknowledged(
                    &c,
                    UploadSpec {
                        kind: "gnss",
                        format: "gpx",
                        drive_id: &format!("bench-{n}"),
                        filename: "track.gpx",
                        data: gpx(d, n.wrapping_add(salt % 100_000), fixes),
                    },
                )
                .await?;
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
    let elapsed_s = started.elapsed().as_secs_f64();
    server.abort();
    maintenance.abort();
    let mut acks = acks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    acks.sort_by_key(|(done, _)| *done);
    Ok(Drive { acks, elapsed_s })
}

/// What a vision poll costs on `lake`, ms: the full read every poll used
/// to make, and a poll following the commits since the last one.
async fn vision_poll_ms(lake: &Lake) -> Result<(f64, f64)> {
    let t = Instant::now();
    lake.pending_uploads().await?;
    let full = t.elapsed().as_secs_f64() * 1000.0;
    let mut watch = lake.watch_pending().await?;
    let t = Instant::now();
    lake.poll_pending(&mut watch).await?;
    Ok((full, t.elapsed().as_secs_f64() * 1000.0))
}

/// How many uploads the lake lists (any status).
async fn uploads_held(lake: &Lake) -> Result<i64> {
    let out = lake.query("SELECT count(*) AS n FROM uploads").await?;
    let n = out
        .batches
        .first()
        .map(|b| hexroad_lake::columns::i64s(b, "n"))
        .transpose()?
        .and_then(|n| n.first().copied())
        .unwrap_or(0);
    Ok(n)
}

/// This process's resident memory, MiB (Linux; 0 elsewhere).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

pub async fn run(args: Args) -> Result<()> {
    if args.devices == 0 || args.uploads < args.devices || args.fixes < 2 {
        bail!("--devices must be positive, --uploads at least --devices, --fixes at least 2");
    }
    let dir = tempfile::tempdir().context("temporary folder")?;
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| dir.path().join("history"));
    let lake = Arc::new(Lake::open(&data.to_string_lossy()).await?);
    if args.bulk_history > 0 {
        let s = lay_down(&lake, args.bulk_history, args.devices, args.fixes).await?;
        println!(
            "history: {} uploads laid down through the commit path, then maintained, in {s:.0} s",
            args.bulk_history
        );
    }
    if args.history > 0 {
        let built = drive(&lake, dir.path(), args.devices, args.history, args.fixes).await?;
        println!(
            "history: {} uploads at {:.1}/s, ack p50 first / last tenth {:.0} / {:.0} ms",
            built.acks.len(),
            built.rate(),
            built.first_tenth().0,
            built.last_tenth().0
        );
    }
    let held = uploads_held(&lake).await?;
    drop(lake);
    // Opening the history: how long, and the process's memory after.
    let opened = Instant::now();
    let lake = Arc::new(Lake::open(&data.to_string_lossy()).await?);
    let open_s = opened.elapsed().as_secs_f64();
    let open_mib = rss_mib();

    let aged = drive(&lake, dir.path(), args.devices, args.uploads, args.fixes).await?;
    let fresh_lake = Arc::new(Lake::open(&dir.path().join("fresh").to_string_lossy()).await?);
    let fresh = drive(
        &fresh_lake,
        dir.path(),
        args.devices,
        args.uploads,
        args.fixes,
    )
    .await?;

    println!(
        "hexroad bench lake: {} devices, probes of {} uploads of {} fixes (GPX, signed, tus), \
         into a lake holding {held} uploads and into a fresh one",
        args.devices,
        aged.acks.len(),
        args.fixes
    );
    println!(
        "  Lake::open over the history:       {open_s:8.2} s, process RSS after it {open_mib:.0} MiB (goal < 2 s at 1M uploads)"
    );
    let (a50, a99) = aged.all();
    let (f50, f99) = fresh.all();
    println!("  ack p50 / p99, fresh lake:         {f50:8.0} / {f99:.0} ms");
    println!("  ack p50 / p99, with history:       {a50:8.0} / {a99:.0} ms");
    println!(
        "  with history / fresh, p50:         {:8.2}× (goal ≤ 1.3×)",
        a50 / f50.max(1e-9)
    );
    println!(
        "  sustained, fresh / with history:   {:8.1} / {:.1} uploads/s (goal ≥ 1000/s: {:.3}×)",
        fresh.rate(),
        aged.rate(),
        aged.rate() / 1000.0
    );
    let (aged_full, aged_poll) = vision_poll_ms(&lake).await?;
    let (fresh_full, fresh_poll) = vision_poll_ms(&fresh_lake).await?;
    println!(
        "  vision poll, full read / following commits: fresh {fresh_full:.1} / {fresh_poll:.1} ms, \
         with history {aged_full:.1} / {aged_poll:.1} ms"
    );
    let held = uploads_held(&lake).await?;
    let tables = [
        hexroad_lake::TableName::Uploads,
        hexroad_lake::TableName::Gnss,
    ];
    let mut before = Vec::new();
    for table in tables {
        before.push(table_files(&lake, &data, table).await?);
    }
    let policy = hexroad_lake::Maintenance {
        checkpoint_every: 1,
        vacuum_every: Duration::ZERO,
        ..Default::default()
    };
    lake.maintain(&policy).await?;
    for (table, (commits, files)) in tables.into_iter().zip(before) {
        let (commits_after, files_after) = table_files(&lake, &data, table).await?;
        println!(
            "  {:8} commit files / live Parquet files: {commits:6} / {files} (per 1000 uploads: {:.0} / {:.0}); after a maintenance pass {commits_after} / {files_after}",
            table.as_str(),
            commits as f64 * 1000.0 / held.max(1) as f64,
            files as f64 * 1000.0 / held.max(1) as f64,
        );
    }
    Ok(())
}
