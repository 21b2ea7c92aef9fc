//! Running a fleet: assigning roles, driving, recording and uploading.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};

use crate::SimError;
use crate::client::{DeviceClient, Outcome, Stats, UploadSpec};
use crate::device::DeviceKey;
use crate::drive::Car;
use crate::roads::RoadGraph;
use crate::sensors::{self, Receiver, Vehicle};
use crate::video::{self, VideoSpec};
use hexroad_wire::track;

/// What a simulated device does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Honest,
    /// Teleports halfway through each drive segment.
    Spoofer,
    /// Drives honestly but also replays its signed requests.
    Replayer,
    /// Re-uploads another device's drive as its own.
    Duplicator,
}

/// How to run the fleet.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub server: String,
    /// Honest devices; adversaries are added on top.
    pub devices: usize,
    pub spoofers: usize,
    pub replayers: usize,
    pub duplicators: usize,
    /// Simulated driving time per device.
    pub duration: Duration,
    /// Length of each recorded segment (one video, track and telemetry batch).
    pub segment: Duration,
    pub seed: u64,
    /// When the drives start; by default they end before the run starts.
    pub start: Option<DateTime<Utc>>,
    pub flaky: bool,
    pub osm: PathBuf,
    pub video: VideoSpec,
    pub chunk_size: usize,
    pub retry_for: Duration,
    /// Where segment files are written while they wait to upload.
    pub work_dir: PathBuf,
    /// The manufacturer whose attestation each device's registration
    /// carries (for servers in `attested` registration).
    pub manufacturer: Option<crate::device::Manufacturer>,
    /// The addresses the server's host name stands for, as a DNS name with
    /// several records: each device tries them in its own rotation (the
    /// fleet spreads over the nodes) and moves to the next when one stops
    /// answering. Empty: the host name resolves as usual.
    pub addresses: Vec<std::net::IpAddr>,
}

/// One device in the report.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    pub device_id: String,
    pub contributor_id: String,
    pub role: Role,
    pub uploads_acknowledged: u64,
    pub uploads_rejected: u64,
    pub gnss_points_acknowledged: u64,
}

/// What the run did, as `hexroad sim --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub uploads_acknowledged: u64,
    pub uploads_rejected: u64,
    pub uploads_duplicate: u64,
    pub gnss_points_acknowledged: u64,
    pub telemetry_samples_acknowledged: u64,
    pub bytes_sent: u64,
    /// Bytes sent again after a cut: what the server had not kept.
    pub bytes_resent: u64,
    /// Bytes sent by requests that were cut; what was kept is not resent.
    pub bytes_sent_before_cuts: u64,
    /// The size of every upload, counted once.
    pub upload_bytes: u64,
    pub connection_cuts: u64,
    pub retries: u64,
    pub replays_refused: u64,
    pub replays_accepted: u64,
    pub chunk_p50_ms: Option<f64>,
    pub chunk_p99_ms: Option<f64>,
    pub elapsed_s: f64,
    pub rejections: HashMap<String, u64>,
    pub devices: Vec<DeviceReport>,
}

/// Progress callbacks for a terminal bar.
pub trait Progress: Send + Sync {
    fn planned(&self, uploads: u64);
    fn uploaded(&self, bytes: u64);
}

/// One recorded segment, ready to upload.
struct Segment {
    drive_id: String,
    video: Bytes,
    track: Bytes,
    track_format: &'static str,
    points: Arc<Vec<hexroad_wire::GnssPoint>>,
    gnss_points: u64,
    telemetry: Bytes,
    telemetry_samples: u64,
}

impl Segment {
    /// What a duplicator uploads: the same drive, repackaged so that its bytes
    /// differ (an MP4 `free` box appended, the track in the other format),
    /// as someone passing off another's footage would.
    fn repackaged(&self, by: &str) -> Self {
        let mut video = self.video.to_vec();
        let note = format!("re-uploaded by {by}");
        video.extend_from_slice(&((8 + note.len()) as u32).to_be_bytes());
        video.extend_from_slice(b"free");
        video.extend_from_slice(note.as_bytes());
        let (track, track_format) = if self.track_format == "gpx" {
            (track::write_nmea(&self.points), "nmea")
        } else {
            (track::write_gpx(&self.points, "hexroad-dashcam-sim"), "gpx")
        };
        Self {
            drive_id: format!("{}-copy", self.drive_id),
            video: Bytes::from(video),
            track: Bytes::from(track),
            track_format,
            points: Arc::clone(&self.points),
            gnss_points: self.gnss_points,
            telemetry: self.telemetry.clone(),
            telemetry_samples: self.telemetry_samples,
        }
    }
}

struct Member {
    index: usize,
    role: Role,
    key: DeviceKey,
    contributor: String,
    /// The contributor account's key, which binds the device to it.
    contributor_key: crate::device::VouchingKey,
    rng_seed: u64,
}

#[derive(Default)]
struct Tally {
    acknowledged: u64,
    rejected: u64,
    duplicate: u64,
    gnss_points: u64,
    telemetry_samples: u64,
    upload_bytes: u64,
    rejections: HashMap<String, u64>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.acknowledged += other.acknowledged;
        self.rejected += other.rejected;
        self.duplicate += other.duplicate;
        self.gnss_points += other.gnss_points;
        self.telemetry_samples += other.telemetry_samples;
        self.upload_bytes += other.upload_bytes;
        for (code, n) in other.rejections {
            *self.rejections.entry(code).or_default() += n;
        }
    }
}

/// Segments recorded by honest devices, for duplicators to copy.
#[derive(Default)]
struct Shelf {
    segments: Mutex<HashMap<(usize, usize), Arc<Segment>>>,
    arrived: Notify,
}

/// Runs the fleet to completion.
pub async fn run(config: SimConfig, progress: Arc<dyn Progress>) -> Result<SimReport, SimError> {
    check(&config)?;
    let started = Instant::now();
    let osm = config.osm.clone();
    let graph = tokio::task::spawn_blocking(move || RoadGraph::from_pbf(&osm))
        .await
        .map_err(|e| SimError::Config(format!("loading roads: {e}")))??;
    let graph = Arc::new(graph);
    let starts = Arc::new(graph.well_connected_nodes());
    let segments = config.duration.as_secs_f64() / config.segment.as_secs_f64();
    let segments = segments.ceil() as usize;
    let start = config.start.unwrap_or_else(|| {
        Utc::now()
            - chrono::Duration::from_std(config.duration).unwrap_or_default()
            - chrono::Duration::minutes(10)
    });

    let members = members(&config);
    progress.planned((members.len() * segments * 3) as u64);

    let http = http_client(&config, 0)?;
    let stats = Arc::new(Stats::default());
    let encoders = Arc::new(Semaphore::new(
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    ));
    let shelf = Arc::new(Shelf::default());
    let config = Arc::new(config);
    std::fs::create_dir_all(&config.work_dir).map_err(|source| SimError::Io {
        path: config.work_dir.clone(),
        source,
    })?;

    let mut tasks = tokio::task::JoinSet::new();
    let honest = config.devices;
    for (index, member) in members.into_iter().enumerate() {
        let http = if config.addresses.is_empty() {
            http.clone()
        } else {
            http_client(&config, index)?
        };
        let ctx = DeviceTask {
            graph: Arc::clone(&graph),
            starts: Arc::clone(&starts),
            config: Arc::clone(&config),
            http,
            stats: Arc::clone(&stats),
            encoders: Arc::clone(&encoders),
            shelf: Arc::clone(&shelf),
            progress: Arc::clone(&progress),
            start,
            segments,
            honest,
        };
        tasks.spawn(async move {
            let result = ctx.run(&member).await;
            (member, result)
        });
    }
    let mut reports = Vec::new();
    let mut total = Tally::default();
    while let Some(joined) = tasks.join_next().await {
        let (member, tally) = joined.map_err(|e| SimError::Config(format!("device task: {e}")))?;
        let tally = tally?;
        reports.push(DeviceReport {
            device_id: member.key.id().to_string(),
            contributor_id: member.contributor.clone(),
            role: member.role,
            uploads_acknowledged: tally.acknowledged,
            uploads_rejected: tally.rejected,
            gnss_points_acknowledged: tally.gnss_points,
        });
        total.add(tally);
    }
    reports.sort_by(|a, b| a.contributor_id.cmp(&b.contributor_id));
    Ok(report(&stats, total, reports, started))
}

/// Refuses a configuration that cannot run.
/// The HTTP client of the `index`th device: with [`SimConfig::addresses`],
/// the server's name resolves to them starting from the `index`th.
fn http_client(config: &SimConfig, index: usize) -> Result<reqwest::Client, SimError> {
    let mut builder = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(3));
    if !config.addresses.is_empty() {
        let url = reqwest::Url::parse(&config.server)
            .map_err(|e| SimError::Config(format!("server {:?}: {e}", config.server)))?;
        let host = url
            .host_str()
            .ok_or_else(|| SimError::Config(format!("server {:?} has no host", config.server)))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let mut addresses: Vec<std::net::SocketAddr> = config
            .addresses
            .iter()
            .map(|ip| std::net::SocketAddr::new(*ip, port))
            .collect();
        let first = index % addresses.len();
        addresses.rotate_left(first);
        builder = builder.resolve_to_addrs(host, &addresses);
    }
    builder.build().map_err(|e| SimError::Http(e.to_string()))
}

fn check(config: &SimConfig) -> Result<(), SimError> {
    if config.devices + config.spoofers + config.replayers + config.duplicators == 0 {
        return Err(SimError::Config("no devices to simulate".into()));
    }
    if config.duplicators > 0 && config.devices == 0 {
        return Err(SimError::Config(
            "duplicators need honest devices to copy".into(),
        ));
    }
    if config.segment.is_zero() || config.duration.is_zero() {
        return Err(SimError::Config(
            "duration and segment must be positive".into(),
        ));
    }
    Ok(())
}

/// The fleet: honest devices first, then each kind of adversary, each with
/// its own key and random stream drawn from the seed.
fn members(config: &SimConfig) -> Vec<Member> {
    let mut master = ChaCha8Rng::seed_from_u64(config.seed);
    let mut members = Vec::new();
    let roles = std::iter::repeat_n(Role::Honest, config.devices)
        .chain(std::iter::repeat_n(Role::Spoofer, config.spoofers))
        .chain(std::iter::repeat_n(Role::Replayer, config.replayers))
        .chain(std::iter::repeat_n(Role::Duplicator, config.duplicators));
    for (index, role) in roles.enumerate() {
        let contributor = format!("contributor-{:04}", index + 1);
        members.push(Member {
            index,
            role,
            key: DeviceKey::from_seed(master.random()),
            contributor_key: contributor_key(&contributor),
            contributor,
            rng_seed: master.random(),
        });
    }
    members
}

/// A simulated contributor's account key: the same for its name in every
/// run, as a person's key would be, whatever the fleet's seed.
fn contributor_key(name: &str) -> crate::device::VouchingKey {
    use sha2::{Digest, Sha256};
    let seed = Sha256::new()
        .chain_update(b"hexroad sim contributor key\n")
        .chain_update(name.as_bytes())
        .finalize();
    crate::device::VouchingKey::from_seed(seed.into())
}

/// The run's report from the fleet's shared counters and each device's tally.
fn report(stats: &Stats, total: Tally, devices: Vec<DeviceReport>, started: Instant) -> SimReport {
    let mut times = stats
        .chunk_times
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    times.sort();
    let pct = |p: f64| {
        (!times.is_empty()).then(|| {
            let i = ((times.len() - 1) as f64 * p).round() as usize;
            times[i].as_secs_f64() * 1000.0
        })
    };
    SimReport {
        uploads_acknowledged: total.acknowledged,
        uploads_rejected: total.rejected,
        uploads_duplicate: total.duplicate,
        gnss_points_acknowledged: total.gnss_points,
        telemetry_samples_acknowledged: total.telemetry_samples,
        bytes_sent: stats.bytes_sent.load(Ordering::Relaxed),
        bytes_resent: stats.bytes_resent.load(Ordering::Relaxed),
        bytes_sent_before_cuts: stats.bytes_sent_before_cuts.load(Ordering::Relaxed),
        upload_bytes: total.upload_bytes,
        connection_cuts: stats.cuts.load(Ordering::Relaxed),
        retries: stats.retries.load(Ordering::Relaxed),
        replays_refused: stats.replays_refused.load(Ordering::Relaxed),
        replays_accepted: stats.replays_accepted.load(Ordering::Relaxed),
        chunk_p50_ms: pct(0.5),
        chunk_p99_ms: pct(0.99),
        elapsed_s: started.elapsed().as_secs_f64(),
        rejections: total.rejections,
        devices,
    }
}

struct DeviceTask {
    graph: Arc<RoadGraph>,
    starts: Arc<Vec<usize>>,
    config: Arc<SimConfig>,
    http: reqwest::Client,
    stats: Arc<Stats>,
    encoders: Arc<Semaphore>,
    shelf: Arc<Shelf>,
    progress: Arc<dyn Progress>,
    start: DateTime<Utc>,
    segments: usize,
    honest: usize,
}

impl DeviceTask {
    async fn run(&self, member: &Member) -> Result<Tally, SimError> {
        let mut rng = ChaCha8Rng::seed_from_u64(member.rng_seed);
        let client = DeviceClient {
            http: &self.http,
            server: &self.config.server,
            key: &member.key,
            stats: &self.stats,
            flaky: self
                .config
                .flaky
                .then(|| Mutex::new(ChaCha8Rng::seed_from_u64(member.rng_seed ^ 0xF1A4))),
            chunk_size: self.config.chunk_size,
            retry_for: self.config.retry_for,
            replayer: member.role == Role::Replayer,
        };
        let makes = [
            ("Nextbase", "622GW"),
            ("Garmin", "Dash Cam 67W"),
            ("Hivemapper", "Bee"),
            ("Vantrue", "N4"),
        ];
        let (make, model) = makes[rng.random_range(0..makes.len())];
        let serial = format!("SIM-{:016x}-{:04}", self.config.seed, member.index);
        let vouchers = crate::client::Vouchers {
            contributor_key: &member.contributor_key,
            manufacturer: self
                .config
                .manufacturer
                .as_ref()
                .map(|m| (m, serial.as_str())),
        };
        client
            .register(&member.contributor, make, model, Some(&vouchers))
            .await?;

        let mut car = Car::new(&self.graph, &self.starts, &mut rng);
        let receiver = Receiver::random(&mut rng);
        let mut vehicle = Vehicle::random(&mut rng);
        let track_format = if member.index.is_multiple_of(2) {
            "gpx"
        } else {
            "nmea"
        };
        // Devices start their drives a few seconds apart.
        let offset = chrono::Duration::seconds(rng.random_range(0..30));
        let mut tally = Tally::default();
        let seg_len = chrono::Duration::from_std(self.config.segment).unwrap_or_default();
        for seg in 0..self.segments {
            let segment = if member.role == Role::Duplicator {
                let victim = member.index % self.honest.max(1);
                Arc::new(
                    self.shelf_get(victim, seg)
                        .await
                        .repackaged(member.key.id().as_str()),
                )
            } else {
                let seg_start = self.start + offset + seg_len * seg as i32;
                let remaining = self
                    .config
                    .duration
                    .saturating_sub(self.config.segment * seg as u32);
                let length = remaining.min(self.config.segment);
                let samples = car.drive(&self.graph, seg_start, length, &mut rng);
                let mut points = sensors::gnss(&samples, receiver, &mut rng);
                if member.role == Role::Spoofer {
                    sensors::spoof(&mut points, &mut rng);
                }
                let telemetry = sensors::telemetry(&samples, &mut vehicle);
                let label = member.key.id().as_str()[..8].to_owned();
                let path = self
                    .config
                    .work_dir
                    .join(format!("{}-{seg}.mp4", member.key.id()));
                let permit = self
                    .encoders
                    .acquire()
                    .await
                    .map_err(|e| SimError::Video(e.to_string()))?;
                let spec = self.config.video;
                let video_path = path.clone();
                tokio::task::spawn_blocking(move || {
                    video::encode(&samples, spec, &label, &video_path)
                })
                .await
                .map_err(|e| SimError::Video(e.to_string()))??;
                drop(permit);
                let video = tokio::fs::read(&path)
                    .await
                    .map_err(|source| SimError::Io {
                        path: path.clone(),
                        source,
                    })?;
                let _ = tokio::fs::remove_file(&path).await;
                let track = if track_format == "gpx" {
                    track::write_gpx(&points, "hexroad-dashcam-sim")
                } else {
                    track::write_nmea(&points)
                };
                Arc::new(Segment {
                    drive_id: format!("{}-{seg}", &member.key.id().as_str()[..16]),
                    video: Bytes::from(video),
                    track: Bytes::from(track),
                    track_format,
                    gnss_points: points.len() as u64,
                    points: Arc::new(points),
                    telemetry: Bytes::from(sensors::to_ndjson(&telemetry)),
                    telemetry_samples: telemetry.len() as u64,
                })
            };
            self.upload_segment(&client, member, &segment, &mut tally)
                .await?;
            if member.role == Role::Honest {
                // Shelved once uploaded, so a duplicator's copy always comes second.
                let mut shelf = self
                    .shelf
                    .segments
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                shelf.insert((member.index, seg), Arc::clone(&segment));
                self.shelf.arrived.notify_waiters();
            }
        }
        Ok(tally)
    }

    /// Uploads a segment's video, track and telemetry, counting outcomes.
    async fn upload_segment(
        &self,
        client: &DeviceClient<'_>,
        member: &Member,
        segment: &Segment,
        tally: &mut Tally,
    ) -> Result<(), SimError> {
        let uploads = [
            ("video", "mp4", "drive.mp4", &segment.video, 0u64, 0u64),
            (
                "gnss",
                segment.track_format,
                "track",
                &segment.track,
                segment.gnss_points,
                0,
            ),
            (
                "telemetry",
                "ndjson",
                "telemetry.ndjson",
                &segment.telemetry,
                0,
                segment.telemetry_samples,
            ),
        ];
        for (kind, format, filename, data, points, samples) in uploads {
            let outcome = client
                .upload(UploadSpec {
                    kind,
                    format,
                    drive_id: &segment.drive_id,
                    filename,
                    data: data.clone(),
                })
                .await?;
            self.progress.uploaded(data.len() as u64);
            tally.upload_bytes += data.len() as u64;
            match outcome {
                Outcome::Acknowledged { status, .. } => {
                    tally.acknowledged += 1;
                    if status == "accepted" {
                        tally.gnss_points += points;
                        tally.telemetry_samples += samples;
                    } else {
                        tally.duplicate += 1;
                    }
                }
                Outcome::Rejected { code, message } => {
                    tracing::debug!(device = %member.key.id(), kind, code, message, "upload rejected");
                    tally.rejected += 1;
                    *tally.rejections.entry(code).or_default() += 1;
                }
            }
        }
        Ok(())
    }

    async fn shelf_get(&self, victim: usize, seg: usize) -> Arc<Segment> {
        loop {
            let notified = self.shelf.arrived.notified();
            if let Some(s) = self
                .shelf
                .segments
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(victim, seg))
            {
                return Arc::clone(s);
            }
            notified.await;
        }
    }
}
