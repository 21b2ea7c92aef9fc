//! `hexroad bench abuse`: honest devices upload against a real `hexroad
//! serve` process, first alone, then while hostile clients do at once what
//! issue 14 lists: slow headers, silent PATCH bodies, registration floods,
//! resolution bombs, sparse tars, non-ASCII NMEA, cold-tile and heavy-SQL
//! floods, unknown frame ids. It reports the honest devices' ack latency
//! in both runs (p99 goal: within 2× of the quiet run), what the hostile
//! clients got, and the server's peak RSS. A benchmark, not a test: its
//! figures depend on the machine.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hexroad_dashcam_sim::{DeviceClient, DeviceKey, Outcome, Stats, UploadSpec};
use tokio::io::AsyncWriteExt;

use super::common::percentile_ms;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Honest devices uploading.
    #[arg(long, default_value_t = 8)]
    devices: usize,
    /// Seconds each run (quiet, then under attack) lasts.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Size of each honest upload, KiB.
    #[arg(long, default_value_t = 256)]
    upload_kib: usize,
    /// Slow-header connections held open at once.
    #[arg(long, default_value_t = 200)]
    slowloris: usize,
    /// Run only these attacks (comma-separated: slow-headers, silent-patch,
    /// registrations, bombs, tiles, sql, frames, bad-signatures), to see
    /// which one costs the honest devices what.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// The attacks' short names, in the order of [`ATTACKS`].
const NAMES: [&str; 8] = [
    "slow-headers",
    "silent-patch",
    "registrations",
    "bombs",
    "tiles",
    "sql",
    "frames",
    "bad-signatures",
];

/// The server under test, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(data: &std::path::Path) -> Result<Self> {
        let exe = std::env::current_exe().context("locating the hexroad binary")?;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--flight-listen", ""])
            .arg("--data")
            .arg(data)
            .env("HEXROAD__VISION__ENABLED", "false")
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting hexroad serve")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("serve's stdout")?;
        BufReader::new(stdout).read_line(&mut line)?;
        let base = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(|a| format!("http://{a}"))
            .with_context(|| format!("serve printed {line:?}"))?;
        Ok(Self { child, base })
    }

    /// Peak resident memory so far, MiB (`VmHWM`).
    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

fn key(tag: u64, i: u64) -> DeviceKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&tag.to_le_bytes());
    seed[8..16].copy_from_slice(&i.to_le_bytes());
    DeviceKey::from_seed(seed)
}

fn client<'a>(
    http: &'a reqwest::Client,
    base: &'a str,
    key: &'a DeviceKey,
    stats: &'a Stats,
) -> DeviceClient<'a> {
    super::common::device_client(http, base, key, stats, Duration::from_secs(20))
}

/// Honest uploads until the deadline: each one's time from creation to
/// the acknowledged last PATCH.
async fn honest_run(
    base: &str,
    devices: usize,
    size: usize,
    seconds: u64,
) -> Result<(Vec<Duration>, u64)> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for d in 0..devices {
        let (base, failures) = (base.to_owned(), Arc::clone(&failures));
        tasks.spawn(async move {
            let (http, stats, key) = (reqwest::Client::new(), Stats::default(), key(1, d as u64));
            let c = client(&http, &base, &key, &stats);
            let mut acks = Vec::new();
            let mut n = 0;
            while Instant::now() < deadline {
                let data = super::ingest::batch(d, n, size);
                n += 1;
                let started = Instant::now();
                let spec = UploadSpec {
                    kind: "telemetry",
                    format: "ndjson",
                    drive_id: "honest",
                    filename: "t.ndjson",
                    data,
                };
                match c.upload(spec).await {
                    Ok(Outcome::Acknowledged { .. }) => acks.push(started.elapsed()),
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            acks
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done?);
    }
    all.sort();
    Ok((all, failures.load(Ordering::Relaxed)))
}

/// What one kind of hostile client sent and got.
#[derive(Default)]
struct Tally {
    sent: AtomicU64,
    refused: AtomicU64,
}

impl Tally {
    /// One more attempt under way.
    fn send(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// How an attempt ended.
    fn note(&self, refused: bool) {
        if refused {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

const ATTACKS: [&str; 8] = [
    "slow headers (connections)",
    "silent PATCH bodies",
    "fresh-key registrations",
    "bombs: 23000² JPEG, sparse tar, non-ASCII NMEA",
    "cold z16 tiles",
    "heavy SQL",
    "unknown frame ids",
    "unsigned and badly signed uploads",
];

/// One run: a fresh server and lake, honest devices, and the hostile
/// clients if `hostile`. Each run starts from an empty lake, so the two are
/// compared at the same size of history.
struct RunResult {
    acks: Vec<Duration>,
    failed: u64,
    tallies: Vec<Tally>,
    peak_rss_mib: f64,
    healthy: bool,
}

async fn one_run(args: &Args, hostile: bool) -> Result<RunResult> {
    let dir = tempfile::tempdir().context("temporary data folder")?;
    let mut server = Server::start(&dir.path().join("data"))?;
    let base = server.base.clone();
    let http = reqwest::Client::new();
    let stats = Stats::default();
    for d in 0..args.devices {
        let k = key(1, d as u64);
        client(&http, &base, &k, &stats)
            .register("honest", "bench", "bench", None)
            .await?;
    }
    let on =
        |i: usize| hostile && (args.only.is_empty() || args.only.iter().any(|n| n == NAMES[i]));
    let stop = Arc::new(AtomicBool::new(false));
    let tallies: Arc<Vec<Tally>> = Arc::new(ATTACKS.iter().map(|_| Tally::default()).collect());
    let mut attacks = tokio::task::JoinSet::new();
    let addr = base.trim_start_matches("http://").to_owned();
    for i in 0..if on(0) { args.slowloris } else { 0 } {
        let (addr, stop, t) = (addr.clone(), Arc::clone(&stop), Arc::clone(&tallies));
        attacks.spawn(async move { slow_headers(&addr, i, &stop, &t[0]).await });
    }
    for i in 0..if on(1) { 4 } else { 0 } {
        let (base, stop, t) = (base.clone(), Arc::clone(&stop), Arc::clone(&tallies));
        attacks.spawn(async move { silent_patches(&base, i, &stop, &t[1]).await });
    }
    for which in (2..ATTACKS.len()).filter(|w| on(*w)) {
        // Two tile flooders, and one more SQL flooder than queries allowed.
        let copies = match which {
            4 => 2,
            5 => 3,
            _ => 1,
        };
        for _ in 0..copies {
            let (base, stop, t) = (base.clone(), Arc::clone(&stop), Arc::clone(&tallies));
            attacks.spawn(async move { flood(&base, which, &stop, &t[which]).await });
        }
    }
    let size = args.upload_kib << 10;
    let (acks, failed) = honest_run(&base, args.devices, size, args.seconds).await?;
    stop.store(true, Ordering::Release);
    attacks.abort_all();
    while attacks.join_next().await.is_some() {}
    let peak_rss_mib = server.peak_rss_mib();
    let healthy = server.alive()
        && http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
    let tallies = Arc::try_unwrap(tallies).unwrap_or_default();
    Ok(RunResult {
        acks,
        failed,
        tallies,
        peak_rss_mib,
        healthy,
    })
}

pub async fn run(args: Args) -> Result<()> {
    if args.devices == 0 || args.seconds == 0 || args.upload_kib == 0 {
        bail!("--devices, --seconds and --upload-kib must be positive");
    }
    if let Some(bad) = args.only.iter().find(|n| !NAMES.contains(&n.as_str())) {
        bail!(
            "--only: no attack {bad:?}; the attacks are {}",
            NAMES.join(", ")
        );
    }
    let quiet = one_run(&args, false).await?;
    let loud = one_run(&args, true).await?;
    let p = |v: &[Duration], q: f64| percentile_ms(v, q);
    println!(
        "hexroad bench abuse: {} honest devices, {} KiB uploads, {} s alone, then {} s under attack \
         (each on a fresh server and lake)",
        args.devices, args.upload_kib, args.seconds, args.seconds
    );
    for (name, r) in [("alone:       ", &quiet), ("under attack:", &loud)] {
        println!(
            "  {name} {:5} acks, p50 {:7.1} ms, p99 {:7.1} ms, {} not acknowledged, peak RSS {:.0} MiB",
            r.acks.len(),
            p(&r.acks, 0.5),
            p(&r.acks, 0.99),
            r.failed,
            r.peak_rss_mib
        );
    }
    println!(
        "  p99 under attack / alone: {:.2} (goal: at most 2.00); acks {:.2} of the quiet run's",
        p(&loud.acks, 0.99) / p(&quiet.acks, 0.99).max(0.001),
        loud.acks.len() as f64 / quiet.acks.len().max(1) as f64
    );
    println!("  hostile clients (attempts begun, refused or cut off):");
    for (name, t) in ATTACKS.iter().zip(loud.tallies.iter()) {
        println!(
            "    {name:48} {:7} {:7}",
            t.sent.load(Ordering::Relaxed),
            t.refused.load(Ordering::Relaxed)
        );
    }
    println!(
        "  server alive and answering /healthz after the attack: {}",
        if loud.healthy { "yes" } else { "NO" }
    );
    Ok(())
}

/// Holds a connection sending a header line every 2 s, never ending the
/// head; counts the times the server cut it off.
async fn slow_headers(addr: &str, i: usize, stop: &AtomicBool, tally: &Tally) {
    while !stop.load(Ordering::Acquire) {
        let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        tally.send();
        let _ = conn
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await;
        let mut n = 0;
        let cut = loop {
            if stop.load(Ordering::Acquire) {
                break false;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            n += 1;
            if conn
                .write_all(format!("x-drip-{i}-{n}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break true;
            }
        };
        tally.note(cut);
    }
}

/// Creates an upload, sends its PATCH head and a little of the body, then
/// goes silent until the server drops it.
async fn silent_patches(base: &str, i: u64, stop: &AtomicBool, tally: &Tally) {
    use base64::Engine as _;
    use sha2::Digest as _;
    let (http, stats, key) = (reqwest::Client::new(), Stats::default(), key(2, i));
    let c = client(&http, base, &key, &stats);
    if c.register("mallory", "bench", "bench", None).await.is_err() {
        return;
    }
    let addr = base.trim_start_matches("http://");
    while !stop.load(Ordering::Acquire) {
        let body = vec![b'x'; 1 << 20];
        let sha = hex::encode(sha2::Sha256::digest(&body));
        let meta = format!(
            "kind {},format {},sha256 {}",
            base64::engine::general_purpose::STANDARD.encode("telemetry"),
            base64::engine::general_purpose::STANDARD.encode("ndjson"),
            base64::engine::general_purpose::STANDARD.encode(&sha)
        );
        let covered = [
            ("upload-length", body.len().to_string()),
            ("upload-metadata", meta),
        ];
        let now = chrono::Utc::now().timestamp();
        let mut req = http
            .post(format!("{base}/v1/uploads"))
            .header("tus-resumable", "1.0.0");
        for (n, v) in covered.iter().map(|(n, v)| (*n, v.clone())).chain(key.sign(
            ("POST", addr, "/v1/uploads"),
            &covered,
            now,
        )) {
            req = req.header(n, v);
        }
        let Ok(r) = req.send().await else { continue };
        tally.send();
        let Some(location) = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
        else {
            tally.note(true);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let checksum = format!(
            "sha256 {}",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body))
        );
        let covered = [
            ("upload-offset", "0".to_owned()),
            ("upload-checksum", checksum),
            ("content-type", "application/offset+octet-stream".to_owned()),
        ];
        let mut head = format!(
            "PATCH {location} HTTP/1.1\r\nhost: {addr}\r\ntus-resumable: 1.0.0\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (n, v) in covered.iter().map(|(n, v)| (*n, v.clone())).chain(key.sign(
            ("PATCH", addr, &location),
            &covered,
            now,
        )) {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let Ok(mut conn) = tokio::net::TcpStream::connect(addr).await else {
            continue;
        };
        tally.send();
        let _ = conn.write_all(head.as_bytes()).await;
        let _ = conn.write_all(&body[..1024]).await;
        // Silent until the server gives up on it.
        let mut sink = [0u8; 512];
        let answered = tokio::time::timeout(
            Duration::from_secs(120),
            tokio::io::AsyncReadExt::read(&mut conn, &mut sink),
        )
        .await
        .is_ok();
        tally.note(answered);
    }
}

/// One request of attack `which`, over and over.
async fn flood(base: &str, which: usize, stop: &AtomicBool, tally: &Tally) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_default();
    let stats = Stats::default();
    let mallory = key(3, which as u64);
    let c = client(&http, base, &mallory, &stats);
    let c = DeviceClient {
        retry_for: Duration::ZERO,
        ..c
    };
    if which == 3 && c.register("mallory", "bench", "bench", None).await.is_err() {
        return;
    }
    let mut n: u64 = 0;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        tally.send();
        let refused = match which {
            2 => {
                let fresh = key(4, n);
                client(&http, base, &fresh, &stats)
                    .register("sybil", "bench", "bench", None)
                    .await
                    .is_err()
            }
            3 => {
                let (kind, format, data) = bomb(n);
                let spec = UploadSpec {
                    kind,
                    format,
                    drive_id: "bomb",
                    filename: "bomb",
                    data,
                };
                !matches!(c.upload(spec).await, Ok(Outcome::Acknowledged { .. }))
            }
            4 => {
                let (x, y) = (30_000 + (n * 7919) % 5000, 20_000 + (n * 104_729) % 5000);
                status(&http, &format!("{base}/tiles/16/{x}/{y}.mvt")).await >= 400
            }
            5 => {
                let r = http
                    .post(format!("{base}/v1/sql"))
                    .header("content-type", "application/json")
                    .body(
                        r#"{"query": "SELECT count(*) FROM generate_series(1, 1000000000) a, generate_series(1, 1000) b"}"#,
                    )
                    .send()
                    .await;
                r.map_or(true, |r| r.status().as_u16() >= 400)
            }
            6 => {
                let id = hexroad_wire::FrameId::from_bytes((u128::from(n) << 64 | 7).to_be_bytes());
                status(&http, &format!("{base}/frames/{id}.jpg")).await >= 400
            }
            _ => {
                let r = http
                    .post(format!("{base}/v1/uploads"))
                    .header("tus-resumable", "1.0.0")
                    .header("upload-length", "1000")
                    .header("signature-input", "sig=(\"@method\");created=1;keyid=\"x\"")
                    .header("signature", "sig=:AAAA:")
                    .send()
                    .await;
                r.map_or(true, |r| r.status().as_u16() >= 400)
            }
        };
        tally.note(refused);
        if refused && matches!(which, 2 | 5) {
            // Refused with Retry-After: a flood that reads it still floods.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn status(http: &reqwest::Client, url: &str) -> u16 {
    http.get(url)
        .send()
        .await
        .map_or(599, |r| r.status().as_u16())
}

/// A hostile upload: a bundle declaring a 23000×23000 JPEG, a bundle with a
/// sparse member, or NMEA with a multi-byte character, in turn.
fn bomb(n: u64) -> (&'static str, &'static str, Bytes) {
    match n % 3 {
        0 => {
            let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08];
            jpeg.extend(23_000u16.to_be_bytes());
            jpeg.extend(23_000u16.to_be_bytes());
            jpeg.extend([0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01]);
            jpeg.extend([0xFF, 0xD9]);
            (
                "frames",
                "tar",
                Bytes::from(tar(&[(b'0', "1700000000000.jpg", &jpeg)], n)),
            )
        }
        1 => (
            "frames",
            "tar",
            Bytes::from(tar(&[(b'S', "1700000000000.jpg", &[0u8; 16])], n)),
        ),
        _ => (
            "gnss",
            "nmea",
            Bytes::from(format!(
                "$GPRMC,120000.00,A,6010.2000,N,02456.4000,E,10.0,90.0,010125,,,A*00\n$GPGGA,é{n}\n"
            )),
        ),
    }
}

/// A ustar archive of `(type, name, data)` members; `n` keeps each distinct.
fn tar(members: &[(u8, &str, &[u8])], n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, name, data) in members {
        let mut h = [0u8; 512];
        let name = format!("{n}-{name}");
        h[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = *kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}
