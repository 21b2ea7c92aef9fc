//! What makes an upload acceptable: plausible GNSS, known telemetry, real media.

use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use hexroad_wire::track::{self, TrackFormat};
use hexroad_wire::vss;
use hexroad_wire::{GnssPoint, TelemetrySample, UploadKind};

use crate::MediaLimits;
use crate::probe;

/// Why an upload was refused: a stable code and a message naming the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// How the reason is stored in `uploads.reject_reason`.
    pub fn stored(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }
}

/// The limits validation applies.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub now: DateTime<Utc>,
    pub skew: Duration,
    pub max_speed_mps: f64,
    pub media: MediaLimits,
}

/// The rows an accepted upload contributes.
#[derive(Debug, Default)]
pub struct Accepted {
    pub gnss: Vec<GnssPoint>,
    pub telemetry: Vec<TelemetrySample>,
    /// Media details (video probe, frame count) as JSON.
    pub media: Option<serde_json::Value>,
}

/// The formats allowed for each kind.
pub fn check_format(kind: UploadKind, format: &str) -> Result<(), String> {
    let allowed: &[&str] = match kind {
        UploadKind::Video => &["mp4"],
        UploadKind::Gnss => &["gpx", "nmea"],
        UploadKind::Frames => &["tar"],
        UploadKind::Telemetry => &["ndjson"],
    };
    if allowed.contains(&format) {
        Ok(())
    } else {
        Err(format!(
            "format {format:?} is not accepted for kind {:?}; expected one of {allowed:?}",
            kind.as_str()
        ))
    }
}

/// Validates a complete upload held in a local file. Blocking (probes media).
pub fn validate_file(
    path: &Path,
    kind: UploadKind,
    format: &str,
    rules: Rules,
) -> Result<Accepted, Rejection> {
    match kind {
        UploadKind::Video => {
            let info = probe::probe_mp4(path, &rules.media)?;
            Ok(Accepted {
                media: Some(info),
                ..Accepted::default()
            })
        }
        UploadKind::Gnss => {
            let bytes = read(path, rules.media.max_text_bytes)?;
            let fmt = TrackFormat::parse(format).ok_or_else(|| {
                Rejection::new("bad_format", format!("unknown track format {format:?}"))
            })?;
            let points = parse_track(&bytes, fmt)?;
            check_track(&points, rules)?;
            Ok(Accepted {
                gnss: points,
                ..Accepted::default()
            })
        }
        UploadKind::Telemetry => {
            let bytes = read(path, rules.media.max_text_bytes)?;
            let samples = vss::parse_ndjson(&bytes)
                .map_err(|e| Rejection::new(telemetry_code(e.code), e.to_string()))?;
            check_telemetry(&samples, rules)?;
            Ok(Accepted {
                telemetry: samples,
                ..Accepted::default()
            })
        }
        UploadKind::Frames => validate_frames(path, rules),
    }
}

fn telemetry_code(code: &str) -> &'static str {
    match code {
        "unknown_signal" => "unknown_signal",
        "out_of_range" => "telemetry_out_of_range",
        _ => "bad_telemetry",
    }
}

/// Reads a whole text upload, refusing one over `limit` bytes before reading.
fn read(path: &Path, limit: u64) -> Result<Vec<u8>, Rejection> {
    let unreadable =
        |e: std::io::Error| Rejection::new("unreadable", format!("reading the upload: {e}"));
    let len = std::fs::metadata(path).map_err(unreadable)?.len();
    if len > limit {
        return Err(Rejection::new(
            "too_large",
            format!("{len} bytes exceeds the limit of {limit} for a track or telemetry file"),
        ));
    }
    std::fs::read(path).map_err(unreadable)
}

fn parse_track(bytes: &[u8], fmt: TrackFormat) -> Result<Vec<GnssPoint>, Rejection> {
    track::parse(bytes, fmt).map_err(|e| {
        Rejection::new(
            "bad_track",
            format!("{} track, {e}", fmt.as_str().to_uppercase()),
        )
    })
}

/// Great-circle distance in metres between two fixes.
pub fn distance_m(a: &GnssPoint, b: &GnssPoint) -> f64 {
    hexroad_wire::grid::haversine_m((a.lat, a.lon), (b.lat, b.lon))
}

/// Metres of position error allowed per unit of HDOP when judging speed
/// (a typical user-equivalent range error).
const NOISE_M_PER_HDOP: f64 = 5.0;

/// The GNSS rules: in range, not at 0,0, time strictly increasing and not in
/// the future, and no faster than a car can go between fixes.
pub fn check_track(points: &[GnssPoint], rules: Rules) -> Result<(), Rejection> {
    if points.is_empty() {
        return Err(Rejection::new(
            "empty_track",
            "the track has no valid fixes",
        ));
    }
    let latest = rules.now + rules.skew;
    for (i, p) in points.iter().enumerate() {
        let n = i + 1;
        if !(-90.0..=90.0).contains(&p.lat) || !(-180.0..=180.0).contains(&p.lon) {
            return Err(Rejection::new(
                "coordinate_out_of_range",
                format!("fix {n} at ({}, {}) is outside WGS84 ranges", p.lat, p.lon),
            ));
        }
        if p.lat.abs() < 1e-6 && p.lon.abs() < 1e-6 {
            return Err(Rejection::new(
                "null_island",
                format!("fix {n} is at 0,0: a receiver without a fix, not a position"),
            ));
        }
        if p.ts > latest {
            return Err(Rejection::new(
                "future_timestamp",
                format!(
                    "fix {n} is timestamped {}, after the server's clock {} plus the allowed skew",
                    p.ts.to_rfc3339(),
                    rules.now.to_rfc3339()
                ),
            ));
        }
        if p.hdop.is_some_and(|h| h < 0.0) {
            return Err(Rejection::new(
                "bad_track",
                format!("fix {n} has a negative HDOP"),
            ));
        }
        if i > 0 {
            let prev = &points[i - 1];
            if p.ts <= prev.ts {
                return Err(Rejection::new(
                    "non_monotonic_timestamps",
                    format!(
                        "fix {n} at {} is not after fix {i} at {}",
                        p.ts.to_rfc3339(),
                        prev.ts.to_rfc3339()
                    ),
                ));
            }
            let dt = (p.ts - prev.ts).as_seconds_f64();
            let d = distance_m(prev, p);
            // Two fixes can each be off by a few metres times their HDOP;
            // at 10 Hz that alone looks like hundreds of km/h. Only movement
            // beyond that error counts.
            let error_m = NOISE_M_PER_HDOP * (prev.hdop.unwrap_or(2.0) + p.hdop.unwrap_or(2.0));
            let speed = (d - error_m).max(0.0) / dt;
            if speed > rules.max_speed_mps {
                return Err(Rejection::new(
                    "implausible_speed",
                    format!(
                        "fixes {i} and {n} imply {:.0} km/h; the limit is {:.0} km/h",
                        speed * 3.6,
                        rules.max_speed_mps * 3.6
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Telemetry rules: not in the future, and each signal's time increasing.
pub fn check_telemetry(samples: &[TelemetrySample], rules: Rules) -> Result<(), Rejection> {
    if samples.is_empty() {
        return Err(Rejection::new("bad_telemetry", "the batch has no samples"));
    }
    let latest = rules.now + rules.skew;
    let mut last: std::collections::HashMap<&str, DateTime<Utc>> = Default::default();
    for (i, s) in samples.iter().enumerate() {
        let n = i + 1;
        if s.ts > latest {
            return Err(Rejection::new(
                "future_timestamp",
                format!(
                    "sample {n} ({}) is timestamped {}, in the future",
                    s.signal,
                    s.ts.to_rfc3339()
                ),
            ));
        }
        if let Some(prev) = last.insert(&s.signal, s.ts)
            && s.ts <= prev
        {
            return Err(Rejection::new(
                "non_monotonic_timestamps",
                format!(
                    "sample {n}: {} at {} is not after its previous sample",
                    s.signal,
                    s.ts.to_rfc3339()
                ),
            ));
        }
    }
    Ok(())
}

/// A frame bundle: a tar of `<unix_ms>.jpg` frames and one `track.gpx` or
/// `track.nmea`.
fn validate_frames(path: &Path, rules: Rules) -> Result<Accepted, Rejection> {
    let bad = |m: String| Rejection::new("bad_frames", m);
    let file = std::fs::File::open(path).map_err(|e| bad(format!("opening the bundle: {e}")))?;
    let mut archive = tar::Archive::new(file);
    let mut frames = 0u64;
    let mut track: Option<Vec<GnssPoint>> = None;
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad(format!("corrupt tar archive: {e}")))?;
        // Everything is decided from the header before a byte of the
        // member is read: its type, its name, its declared size.
        let name = entry
            .path()
            .map_err(|e| bad(format!("bad entry name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(bad(format!(
                "{name:?} is a {kind:?} member: a bundle holds regular files only \
                 (no sparse, link or device members)"
            )));
        }
        let size = entry
            .header()
            .size()
            .map_err(|e| bad(format!("{name}: bad size: {e}")))?;
        match member(&name) {
            Member::Frame(ms) => {
                frames += 1;
                if frames > rules.media.max_frames {
                    return Err(Rejection::new(
                        "too_large",
                        format!(
                            "the bundle holds more than {} frames",
                            rules.media.max_frames
                        ),
                    ));
                }
                check_frame_time(&name, ms, rules)?;
                let data = read_member(entry, &name, size, rules.media.max_image_bytes)?;
                let (w, h) = hexroad_wire::jpeg::dimensions(&data)
                    .map_err(|m| Rejection::new("corrupt_image", format!("{name}: {m}")))?;
                rules
                    .media
                    .check_picture(w.into(), h.into())
                    .map_err(|m| Rejection::new("too_large", format!("{name}: {m}")))?;
            }
            Member::Track(fmt) => {
                let data = read_member(entry, &name, size, rules.media.max_text_bytes)?;
                let points = parse_track(&data, fmt)?;
                check_track(&points, rules)?;
                track = Some(points);
            }
            Member::Other => {
                return Err(bad(format!(
                    "unexpected entry {name:?}: only <unix_ms>.jpg and track.gpx/track.nmea"
                )));
            }
        }
    }
    let gnss = track.ok_or_else(|| bad("the bundle has no track.gpx or track.nmea".into()))?;
    if frames == 0 {
        return Err(bad("the bundle has no frames".into()));
    }
    Ok(Accepted {
        gnss,
        telemetry: Vec::new(),
        media: Some(serde_json::json!({ "frames": frames })),
    })
}

/// What a bundle member is, by its name alone.
enum Member {
    /// `<unix_ms>.jpg`, with the number as written.
    Frame(Option<i64>),
    Track(TrackFormat),
    Other,
}

fn member(name: &str) -> Member {
    let base = name.rsplit('/').next().unwrap_or(name);
    if let Some(stem) = base
        .strip_suffix(".jpg")
        .or_else(|| base.strip_suffix(".jpeg"))
    {
        return Member::Frame(stem.parse().ok());
    }
    match base {
        "track.gpx" => Member::Track(TrackFormat::Gpx),
        "track.nmea" => Member::Track(TrackFormat::Nmea),
        _ => Member::Other,
    }
}

fn check_frame_time(name: &str, ms: Option<i64>, rules: Rules) -> Result<(), Rejection> {
    let bad = |m: String| Rejection::new("bad_frames", m);
    let ms = ms.ok_or_else(|| bad(format!("{name}: frames must be named <unix_ms>.jpg")))?;
    let ts = DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| bad(format!("{name}: timestamp out of range")))?;
    if ts > rules.now + rules.skew {
        return Err(Rejection::new(
            "future_timestamp",
            format!("{name} is timestamped {}, in the future", ts.to_rfc3339()),
        ));
    }
    Ok(())
}

/// A member's bytes, refusing one whose header declares more than `limit`
/// before reading, and reading no more than it declared.
fn read_member(
    entry: impl std::io::Read,
    name: &str,
    size: u64,
    limit: u64,
) -> Result<Vec<u8>, Rejection> {
    use std::io::Read;
    if size > limit {
        return Err(Rejection::new(
            "too_large",
            format!("{name}: {size} bytes exceeds the limit of {limit}"),
        ));
    }
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry
        .take(size)
        .read_to_end(&mut data)
        .map_err(|e| Rejection::new("bad_frames", format!("{name}: truncated: {e}")))?;
    if data.len() as u64 != size {
        return Err(Rejection::new(
            "bad_frames",
            format!("{name}: truncated: {} of {size} bytes", data.len()),
        ));
    }
    Ok(data)
}

/// The stored reject codes, as the static strings errors carry.
pub fn static_code(code: &str) -> &'static str {
    const CODES: &[&str] = &[
        "sha256_mismatch",
        "corrupt_video",
        "unsupported_container",
        "unsupported_codec",
        "bad_track",
        "empty_track",
        "null_island",
        "coordinate_out_of_range",
        "future_timestamp",
        "non_monotonic_timestamps",
        "implausible_speed",
        "unknown_signal",
        "telemetry_out_of_range",
        "bad_telemetry",
        "bad_frames",
        "corrupt_image",
        "unreadable",
        "probe_failed",
        "bad_format",
        "too_large",
    ];
    CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("rejected")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    proptest::proptest! {
        /// Issue 14: every upload kind is a parser of a stranger's bytes;
        /// whatever they are, the answer is a verdict, never a panic.
        #[test]
        fn any_upload_gets_a_verdict(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            which in 0usize..5,
        ) {
            let (kind, format) = [
                (UploadKind::Gnss, "gpx"),
                (UploadKind::Gnss, "nmea"),
                (UploadKind::Telemetry, "ndjson"),
                (UploadKind::Frames, "tar"),
                (UploadKind::Frames, "tar"),
            ][which];
            // The last: the bytes behind a well-formed tar header.
            let bytes = if which == 4 { tar_header_then(&bytes) } else { bytes };
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), &bytes).unwrap();
            let _ = validate_file(file.path(), kind, format, rules());
        }
    }

    /// A ustar header for a JPEG member of `data`'s length, then `data`.
    fn tar_header_then(data: &[u8]) -> Vec<u8> {
        let mut h = [0u8; 512];
        h[..17].copy_from_slice(b"1700000000000.jpg");
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let mut out = h.to_vec();
        out.extend_from_slice(data);
        out
    }

    fn rules() -> Rules {
        Rules {
            now: Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0).unwrap(),
            skew: Duration::seconds(120),
            max_speed_mps: 90.0,
            media: MediaLimits::default(),
        }
    }

    fn point(sec: i64, lat: f64, lon: f64) -> GnssPoint {
        GnssPoint {
            ts: Utc.with_ymd_and_hms(2026, 11, 1, 11, 0, 0).unwrap() + Duration::seconds(sec),
            lat,
            lon,
            alt: None,
            speed: None,
            heading: None,
            hdop: Some(1.0),
        }
    }

    #[test]
    fn plausible_track_passes() {
        let t = [point(0, 60.17, 24.94), point(1, 60.1701, 24.94)];
        assert!(check_track(&t, rules()).is_ok());
    }

    #[test]
    fn null_island_is_refused() {
        let t = [point(0, 0.0, 0.0)];
        assert_eq!(check_track(&t, rules()).unwrap_err().code, "null_island");
    }

    #[test]
    fn future_fix_is_refused() {
        let t = [point(3 * 3600, 60.17, 24.94)];
        assert_eq!(
            check_track(&t, rules()).unwrap_err().code,
            "future_timestamp"
        );
    }

    #[test]
    fn teleport_is_refused() {
        // Helsinki to Tampere (~160 km) in one second.
        let t = [point(0, 60.17, 24.94), point(1, 61.50, 23.76)];
        assert_eq!(
            check_track(&t, rules()).unwrap_err().code,
            "implausible_speed"
        );
    }

    /// Regression: honest 10 Hz tracks were refused because metres of
    /// position noise over 0.1 s look like hundreds of km/h.
    #[test]
    fn noisy_fast_fixes_are_not_a_teleport() {
        let mut a = point(0, 60.17, 24.94);
        let mut b = a;
        b.ts = a.ts + Duration::milliseconds(100);
        b.lat += 9.0 / 111_195.0; // 9 m in 0.1 s: 324 km/h taken literally
        a.hdop = Some(1.2);
        b.hdop = Some(1.2);
        assert!(check_track(&[a, b], rules()).is_ok());
    }

    #[test]
    fn time_going_backwards_is_refused() {
        let t = [point(5, 60.17, 24.94), point(4, 60.17, 24.94)];
        assert_eq!(
            check_track(&t, rules()).unwrap_err().code,
            "non_monotonic_timestamps"
        );
    }

    #[test]
    fn distance_matches_a_known_value() {
        // One degree of latitude is ~111.2 km on the mean sphere.
        let d = distance_m(&point(0, 60.0, 25.0), &point(1, 61.0, 25.0));
        assert!((d - 111_195.0).abs() < 10.0, "{d}");
    }
}
