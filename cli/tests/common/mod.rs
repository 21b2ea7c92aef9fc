//! What the end-to-end tests share: the `hexroad` binary run from the
//! repository root, a `serve` process, and SQL answers as JSON.

// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hexroad")
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The test venv's Python (`scripts/setup --test`), or `$HEXROAD_PYTHON`.
pub fn python() -> PathBuf {
    std::env::var_os("HEXROAD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"))
}

/// `hexroad …` run from the repository root, where the set-up put `datasets/`.
/// The sim's drives are a minute long, so a 500 m privacy radius would
/// publish nothing: every command runs without one unless a test sets it.
pub fn hexroad(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(root())
        .args(args)
        .env("RUST_LOG", "warn,buoyant_kernel=off,ort=error")
        .env("HEXROAD__PRIVACY__RADIUS_M", "0");
    cmd
}

/// Where a test's lake lives: a folder, or a location on an S3 server
/// together with the environment that reaches it.
pub trait Location {
    /// What `--data` is given.
    fn arg(&self) -> std::ffi::OsString;
    /// What every command on the location needs in its environment.
    fn env(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

impl Location for Path {
    fn arg(&self) -> std::ffi::OsString {
        self.as_os_str().to_owned()
    }
}

impl Location for PathBuf {
    fn arg(&self) -> std::ffi::OsString {
        self.as_os_str().to_owned()
    }
}

/// An `s3://` location and the `AWS_*` settings that reach it.
pub struct S3Location {
    pub url: String,
    pub env: Vec<(String, String)>,
}

impl Location for S3Location {
    fn arg(&self) -> std::ffi::OsString {
        self.url.clone().into()
    }
    fn env(&self) -> Vec<(String, String)> {
        self.env.clone()
    }
}

/// `cmd` given `--data`'s value (after the flag) and its environment.
pub fn on_data<'a>(cmd: &'a mut Command, data: &(impl Location + ?Sized)) -> &'a mut Command {
    cmd.arg(data.arg()).envs(data.env())
}

/// A `hexroad serve` process; killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    /// `http://ADDR` of the HTTP API.
    pub base: String,
    /// `grpc://ADDR` of Flight SQL.
    pub flight: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `hexroad serve` and waits for the line saying where it listens.
/// Flight SQL listens on a free loopback port.
pub fn serve(data: &(impl Location + ?Sized), listen: &str, env: &[(&str, &str)]) -> Server {
    serve_to(data, listen, env, Stdio::inherit())
}

/// [`serve`], its log (stderr) going to `stderr`.
pub fn serve_to(
    data: &(impl Location + ?Sized),
    listen: &str,
    env: &[(&str, &str)],
    stderr: Stdio,
) -> Server {
    let mut child = on_data(
        &mut hexroad(&[
            "serve",
            "--listen",
            listen,
            "--flight-listen",
            "127.0.0.1:0",
            "--data",
        ]),
        data,
    )
    .envs(env.iter().copied())
    .stdout(Stdio::piped())
    .stderr(stderr)
    .spawn()
    .unwrap();
    let line = first_line(&mut child);
    let address = |scheme: &str| {
        line.split(scheme)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|addr| format!("{scheme}{addr}"))
            .unwrap_or_else(|| panic!("serve printed {line:?}"))
    };
    Server {
        base: address("http://"),
        flight: address("grpc://"),
        child,
    }
}

/// The first line a child printed on its piped stdout: where `serve`
/// says it listens.
pub fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout piped"))
        .read_line(&mut line)
        .unwrap();
    line
}

/// `hexroad sim` against `server`: a minute of small (320×240 at 5 fps)
/// video per device plus `extra`; returns its JSON report.
pub fn sim(server: &str, extra: &[&str]) -> Value {
    let out = succeed(
        hexroad(&[
            "sim",
            "--server",
            server,
            "--json",
            "--video",
            "320x240@5",
            "--duration",
            "60s",
        ])
        .args(extra)
        .env("RUST_LOG", "warn"),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits until every accepted video has a vision verdict.
pub fn wait_processed(data: &(impl Location + ?Sized), within: std::time::Duration) {
    let t0 = std::time::Instant::now();
    loop {
        let left = sql_u64(
            data,
            "SELECT count(*) AS n FROM uploads WHERE kind = 'video' AND status = 'accepted' \
             AND upload_id NOT IN (SELECT upload_id FROM processing)",
        );
        if left == 0 {
            return;
        }
        assert!(t0.elapsed() < within, "{left} videos still unprocessed");
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// Runs `cmd` to its end; it must succeed (its stderr is the failure message).
pub fn succeed(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `hexroad sql --format json`, which must succeed.
pub fn sql(data: &(impl Location + ?Sized), query: &str) -> Vec<Value> {
    let out =
        succeed(on_data(&mut hexroad(&["sql", "--format", "json", "--data"]), data).arg(query));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// The single number a `SELECT count(*) …` returns.
pub fn sql_u64(data: &(impl Location + ?Sized), query: &str) -> u64 {
    sql(data, query)[0]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_u64()
        .unwrap()
}

/// Every line of a JSON-lines file (`hexroad anonymize --boxes`).
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// An image `hexroad anonymize` read and the one it wrote, which must be the
/// same size.
pub fn before_after(input: &Path, output: &Path, name: &str) -> (image::RgbImage, image::RgbImage) {
    let before = image::open(input.join(name)).unwrap().to_rgb8();
    let after = image::open(output.join(name)).unwrap().to_rgb8();
    assert_eq!(
        before.dimensions(),
        after.dimensions(),
        "{name} keeps its size"
    );
    (before, after)
}

/// Mean absolute difference between neighbouring pixels (both ways) in the
/// box `[x1, y1, x2, y2]`: what makes a face or a plate's characters
/// recognisable, and what blurring takes away.
pub fn detail(img: &image::RgbImage, b: [u32; 4]) -> f64 {
    let (mut sum, mut n) = (0.0f64, 0.0f64);
    for y in b[1]..b[3].min(img.height()) - 1 {
        for x in b[0]..b[2].min(img.width()) - 1 {
            let p = img.get_pixel(x, y);
            for q in [img.get_pixel(x + 1, y), img.get_pixel(x, y + 1)] {
                for c in 0..3 {
                    sum += (f64::from(p[c]) - f64::from(q[c])).abs();
                }
                n += 3.0;
            }
        }
    }
    sum / n.max(1.0)
}

/// Every acknowledged upload is in `uploads` exactly once, every
/// acknowledged GNSS point is in `gnss` exactly once.
pub fn assert_tables_match(data: &(impl Location + ?Sized), r: &Value) {
    let acknowledged = r["uploads_acknowledged"].as_u64().unwrap();
    let points = r["gnss_points_acknowledged"].as_u64().unwrap();
    let rejected = r["uploads_rejected"].as_u64().unwrap();
    assert!(acknowledged > 0 && points > 0, "{r}");
    assert_eq!(
        sql_u64(
            data,
            "SELECT count(*) FROM uploads WHERE status IN ('accepted', 'duplicate')"
        ),
        acknowledged
    );
    assert_eq!(
        sql_u64(
            data,
            "SELECT count(*) FROM uploads WHERE status = 'rejected'"
        ),
        rejected
    );
    assert_eq!(
        sql_u64(
            data,
            "SELECT count(*) - count(DISTINCT upload_id) FROM uploads"
        ),
        0,
        "an upload id appears twice"
    );
    assert_eq!(sql_u64(data, "SELECT count(*) FROM gnss"), points);
    assert_eq!(
        sql_u64(
            data,
            "SELECT count(*) FROM (SELECT DISTINCT upload_id, ts FROM gnss)"
        ),
        points,
        "a GNSS point appears twice"
    );
    assert_eq!(
        sql_u64(data, "SELECT count(*) FROM telemetry"),
        r["telemetry_samples_acknowledged"].as_u64().unwrap()
    );
}

/// `hexroad epoch run` over `data` into `out`, without a grace period or
/// a per-contributor cap (the sim's fleets are small).
pub fn epoch_command(data: &(impl Location + ?Sized), epoch: &str, out: &Path) -> Command {
    let mut cmd = hexroad(&["epoch", "run", "--epoch", epoch, "--data"]);
    on_data(&mut cmd, data)
        .arg("--out")
        .arg(out)
        .env("HEXROAD__REWARDS__GRACE", "0s")
        .env("HEXROAD__REWARDS__CONTRIBUTOR_CAP_PCT", "100");
    cmd
}

/// The bytes of the ledger an epoch run wrote into `out`.
pub fn ledger(out: &Path) -> Vec<u8> {
    let path = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".ledger.json"))
        .expect("a ledger");
    std::fs::read(path).unwrap()
}

/// An epoch id `START/END`, each to the second in UTC.
pub fn epoch_interval(
    start: chrono::DateTime<chrono::Utc>,
    end: chrono::DateTime<chrono::Utc>,
) -> String {
    let at =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    format!("{}/{}", at(start), at(end))
}
