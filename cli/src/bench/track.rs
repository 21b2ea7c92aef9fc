//! `hexroad bench track`: reading a long GPX track (10 MB by default, a
//! day's driving at 1 Hz), beside Python's standard-library XML parser
//! reading the same file, in the same run. Validation used to be quadratic
//! in the track's length; this keeps it honest.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::{TimeZone, Utc};
use hexroad_wire::GnssPoint;
use hexroad_wire::track::{self, TrackFormat};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Size of the GPX track, MiB.
    #[arg(long, default_value_t = 10)]
    mib: usize,
    /// Python for the comparison [default: $HEXROAD_PYTHON or .venv/bin/python]
    #[arg(long)]
    python: Option<PathBuf>,
}

/// Reads every trkpt's lat, lon and time, as a script would.
const ELEMENTTREE: &str = r#"
import sys, time, datetime
import xml.etree.ElementTree as ET
start = time.perf_counter()
n = 0
for _, el in ET.iterparse(sys.argv[1]):
    if el.tag.endswith("trkpt"):
        float(el.get("lat")); float(el.get("lon"))
        t = el.find("{http://www.topografix.com/GPX/1/1}time")
        datetime.datetime.fromisoformat(t.text.replace("Z", "+00:00"))
        n += 1
        el.clear()
print(n, time.perf_counter() - start)
"#;

/// A drive at 1 Hz long enough to make `bytes` of GPX.
fn points_for(bytes: usize) -> Vec<GnssPoint> {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 6, 0, 0).single();
    let t0 = t0.unwrap_or_default();
    // One trkpt with its extensions is about 180 bytes.
    (0..bytes / 180)
        .map(|i| GnssPoint {
            ts: t0 + chrono::Duration::seconds(i as i64),
            lat: 60.1 + (i % 10_000) as f64 * 1e-5,
            lon: 24.9 + (i / 10_000) as f64 * 1e-3,
            alt: Some(12.5),
            speed: Some(11.0),
            heading: Some(45.0),
            hdop: Some(0.8),
        })
        .collect()
}

pub async fn run(args: Args) -> Result<()> {
    if args.mib == 0 {
        bail!("--mib must be positive");
    }
    let points = points_for(args.mib << 20);
    let gpx = track::write_gpx(&points, "hexroad bench");
    let nmea = track::write_nmea(&points);
    let dir = tempfile::tempdir().context("temporary folder")?;
    let path = dir.path().join("track.gpx");
    std::fs::write(&path, &gpx)?;

    let time = |bytes: &[u8], format| -> Result<f64> {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let read = track::parse(bytes, format)?;
            best = best.min(t.elapsed().as_secs_f64());
            if read.len() != points.len() {
                bail!("read {} points of {}", read.len(), points.len());
            }
        }
        Ok(best)
    };
    let gpx_s = time(gpx.as_bytes(), TrackFormat::Gpx)?;
    let nmea_s = time(nmea.as_bytes(), TrackFormat::Nmea)?;

    let python = super::common::venv_python(args.python);
    let out = Command::new(&python)
        .arg("-c")
        .arg(ELEMENTTREE)
        .arg(&path)
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    let etree_s: Option<f64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok());

    let mb = gpx.len() as f64 / 1e6;
    println!(
        "hexroad bench track: {} fixes ({mb:.1} MB of GPX, {:.1} MB of NMEA)",
        points.len(),
        nmea.len() as f64 / 1e6
    );
    println!(
        "  hexroad GPX parse:                 {gpx_s:8.3} s ({:6.1} MB/s)",
        mb / gpx_s
    );
    println!(
        "  hexroad NMEA parse:                {nmea_s:8.3} s ({:6.1} MB/s)",
        nmea.len() as f64 / 1e6 / nmea_s
    );
    match etree_s {
        Some(e) => println!(
            "  Python ElementTree, same GPX:      {e:8.3} s; hexroad / ElementTree time: {:.2}",
            gpx_s / e
        ),
        None => println!(
            "  Python ElementTree: not measured ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
    Ok(())
}
