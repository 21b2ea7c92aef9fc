//! `hexroad bench ingest`: upload throughput over loopback, per payload
//! type (dashcam video, NDJSON telemetry) and per PATCH size (the whole file
//! in one request, as tus clients send by default, or 1 MiB chunks), each
//! beside a plain file copy of the same bytes measured in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hexroad_dashcam_sim::{DeviceClient, DeviceKey, Sample, Stats, UploadSpec, VideoSpec};
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
    /// Size of each telemetry upload, MiB.
    #[arg(long, default_value_t = 8)]
    size_mib: usize,
    /// Length of the dashcam video each device uploads (1280x720, 30 fps).
    #[arg(long, default_value_t = 20)]
    video_seconds: u32,
}

/// What one pass uploads.
#[derive(Debug, Clone, Copy)]
enum Payload {
    Video,
    Telemetry,
}

/// A PATCH of the whole file, or of this many bytes at most.
const CHUNKS: [(&str, usize); 2] = [("one PATCH", usize::MAX), ("1 MiB PATCHes", 1 << 20)];

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
    if args.devices == 0 || args.uploads == 0 || args.size_mib == 0 || args.video_seconds == 0 {
        bail!("--devices, --uploads, --size-mib and --video-seconds must be positive");
    }
    let dir = tempfile::tempdir().context("temporary data folder")?;
    let data = dir.path().join("data");
    let lake = Arc::new(Lake::open(&data.to_string_lossy()).await?);
    let (base, server) = super::common::start_ingest(&lake, dir.path().into(), |_| {}).await?;
    let http = reqwest::Client::new();
    let stats = Arc::new(Stats::default());
    let keys: Vec<Arc<DeviceKey>> = (0..args.devices)
        .map(|i| {
            let mut seed = [7u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            Arc::new(DeviceKey::from_seed(seed))
        })
        .collect();
    for (i, key) in keys.iter().enumerate() {
        client(&http, &base, key, &stats, usize::MAX)
            .register(&format!("bench-{i}"), "bench", "bench", None)
            .await?;
    }
    let video = dashcam_video(dir.path(), args.video_seconds).await?;
    println!(
        "hexroad bench ingest: {} devices × {} uploads over loopback; video {:.1} MB \
         (H.264 1280x720@30, {} s), telemetry {} MiB NDJSON",
        args.devices,
        args.uploads,
        video.len() as f64 / 1e6,
        args.video_seconds,
        args.size_mib
    );
    println!(
        "  {:<10} {:<14} {:>9} {:>9} {:>7} {:>9} {:>9}",
        "payload", "requests", "MB/s", "copy MB/s", "ratio", "p50 ms", "p99 ms"
    );
    let mut pass = 0;
    for payload in [Payload::Video, Payload::Telemetry] {
        for (label, chunk) in CHUNKS {
            let payloads: Vec<Vec<Bytes>> = (0..args.devices)
                .map(|d| {
                    (0..args.uploads)
                        .map(|n| match payload {
                            Payload::Video => tagged(&video, d, pass * args.uploads + n),
                            Payload::Telemetry => {
                                batch(d, pass * args.uploads + n, args.size_mib << 20)
                            }
                        })
                        .collect()
                })
                .collect();
            pass += 1;
            let copy_s = plain_copy(dir.path(), &payloads)?;
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for (key, uploads) in keys.iter().map(Arc::clone).zip(payloads.clone()) {
                let (http, base) = (http.clone(), base.clone());
                tasks.spawn(async move {
                    let stats = Stats::default();
                    let c = client(&http, &base, &key, &stats, chunk);
                    let mut times = Vec::new();
                    for (n, data) in uploads.into_iter().enumerate() {
                        let (kind, format, filename) = match payload {
                            Payload::Video => ("video", "mp4", "drive.mp4"),
                            Payload::Telemetry => ("telemetry", "ndjson", "bench.ndjson"),
                        };
                        let one = Instant::now();
                        super::common::upload_acknowledged(
                            &c,
                            UploadSpec {
                                kind,
                                format,
                                drive_id: &format!("bench-{n}"),
                                filename,
                                data,
                            },
                        )
                        .await?;
                        times.push(one.elapsed());
                    }
                    anyhow::Ok(times)
                });
            }
            let mut times = Vec::new();
            while let Some(done) = tasks.join_next().await {
                times.extend(done??);
            }
            let upload_s = started.elapsed().as_secs_f64();
            times.sort();
            let mb = payloads.iter().flatten().map(Bytes::len).sum::<usize>() as f64 / 1e6;
            let name = match payload {
                Payload::Video => "video",
                Payload::Telemetry => "telemetry",
            };
            println!(
                "  {name:<10} {label:<14} {:>9.1} {:>9.1} {:>7.3} {:>9.1} {:>9.1}",
                mb / upload_s,
                mb / copy_s,
                copy_s / upload_s,
                percentile_ms(&times, 0.5),
                percentile_ms(&times, 0.99),
            );
        }
    }
    println!(
        "  (ratio: upload MB/s over copy MB/s (median of 3 copies), the limit 1.0; p50/p99: \
         one whole upload, created to acknowledged)"
    );
    server.abort();
    Ok(())
}

/// The alternative: the same bytes as files, each copied once and synced.
/// Returns the median seconds of three rounds (one disk's timing varies).
fn plain_copy(dir: &std::path::Path, payloads: &[Vec<Bytes>]) -> Result<f64> {
    let mut rounds = [0.0; 3];
    for round in &mut rounds {
        *round = copy_once(dir, payloads)?;
    }
    rounds.sort_by(f64::total_cmp);
    Ok(rounds[1])
}

fn copy_once(dir: &std::path::Path, payloads: &[Vec<Bytes>]) -> Result<f64> {
    let copy_dir = dir.join("copy");
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
    let started = Instant::now();
    for (i, src) in sources.iter().enumerate() {
        let dst = copy_dir.join(format!("dst-{i}"));
        std::fs::copy(src, &dst)?;
        std::fs::File::open(&dst)?.sync_all()?;
    }
    let took = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&copy_dir)?;
    Ok(took)
}

/// A dashcam video of `seconds` from the simulator's camera, driving north
/// through Helsinki yesterday.
async fn dashcam_video(dir: &std::path::Path, seconds: u32) -> Result<Bytes> {
    let path = dir.join("bench.mp4");
    let out = path.clone();
    tokio::task::spawn_blocking(move || {
        let start = chrono::Utc::now() - chrono::Duration::days(1);
        let steps = (f64::from(seconds) / hexroad_dashcam_sim::STEP_S).round() as usize;
        let samples: Vec<Sample> = (0..steps)
            .map(|i| {
                let t = i as f64 * hexroad_dashcam_sim::STEP_S;
                Sample {
                    ts: start + chrono::Duration::milliseconds((t * 1000.0) as i64),
                    lat: 60.17 + t * 12.0 / 111_320.0,
                    lon: 24.94,
                    speed: 12.0,
                    heading: 0.0,
                    distance_m: t * 12.0,
                }
            })
            .collect();
        let spec = VideoSpec {
            width: 1280,
            height: 720,
            fps: 30,
        };
        hexroad_dashcam_sim::encode_video(&samples, spec, "bench", &out)
    })
    .await??;
    Ok(Bytes::from(std::fs::read(&path)?))
}

/// `video` made distinct for (device, n) by a trailing MP4 `free` box, which
/// players and probes skip: every upload is new bytes, not a duplicate.
fn tagged(video: &Bytes, device: usize, n: usize) -> Bytes {
    let tag = format!("hexroad bench {device} {n}");
    let mut out = Vec::with_capacity(video.len() + 8 + tag.len());
    out.extend_from_slice(video);
    out.extend_from_slice(&((8 + tag.len()) as u32).to_be_bytes());
    out.extend_from_slice(b"free");
    out.extend_from_slice(tag.as_bytes());
    Bytes::from(out)
}

fn client<'a>(
    http: &'a reqwest::Client,
    base: &'a str,
    key: &'a DeviceKey,
    stats: &'a Stats,
    chunk_size: usize,
) -> DeviceClient<'a> {
    DeviceClient {
        chunk_size,
        ..super::common::device_client(http, base, key, stats, Duration::from_secs(30))
    }
}
