//! GNSS tracks: GPX 1.1 and NMEA 0183 (`$GPRMC` + `$GPGGA`), read and written.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, TimeZone, Utc};
use quick_xml::events::Event;

use crate::GnssPoint;

/// Metres per second in one knot.
const MPS_PER_KNOT: f64 = 0.514_444;

/// The encodings of a GNSS track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackFormat {
    Gpx,
    Nmea,
}

impl TrackFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gpx => "gpx",
            Self::Nmea => "nmea",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "gpx" => Some(Self::Gpx),
            "nmea" => Some(Self::Nmea),
            _ => None,
        }
    }
}

/// Why a track could not be read, with the line it was found on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct TrackError {
    pub line: usize,
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> TrackError {
    TrackError {
        line,
        message: message.into(),
    }
}

/// Reads a track. Values are taken as written; range checks are the caller's.
pub fn parse(bytes: &[u8], format: TrackFormat) -> Result<Vec<GnssPoint>, TrackError> {
    match format {
        TrackFormat::Gpx => parse_gpx(bytes),
        TrackFormat::Nmea => parse_nmea(bytes),
    }
}

/// The line a byte position is on, counted forward only: the XML reader's
/// positions only grow, so a whole document costs one pass over its bytes
/// (counting from byte 0 at every event made a long track quadratic).
struct Lines<'a> {
    bytes: &'a [u8],
    counted_to: usize,
    line: usize,
}

impl<'a> Lines<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            counted_to: 0,
            line: 1,
        }
    }

    fn at(&mut self, pos: u64) -> usize {
        let end = usize::try_from(pos)
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        if end > self.counted_to {
            let newlines = self.bytes[self.counted_to..end]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            self.line += newlines;
            self.counted_to = end;
        }
        self.line
    }
}

#[derive(Default)]
struct PartialPoint {
    lat: Option<f64>,
    lon: Option<f64>,
    ele: Option<f64>,
    time: Option<DateTime<Utc>>,
    hdop: Option<f64>,
    speed: Option<f64>,
    course: Option<f64>,
    line: usize,
}

fn parse_gpx(bytes: &[u8]) -> Result<Vec<GnssPoint>, TrackError> {
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut buf = Vec::new();
    let mut points = Vec::new();
    let mut current: Option<PartialPoint> = None;
    let mut field: Option<&'static str> = None;
    let mut saw_gpx = false;
    let mut depth: i64 = 0;
    let mut lines = Lines::new(bytes);
    loop {
        let pos = reader.buffer_position();
        let line = lines.at(pos);
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| err(line, format!("not well-formed XML: {e}")))?;
        match event {
            Event::Start(e) if e.local_name().as_ref() == b"trkpt" => {
                depth += 1;
                current = Some(trkpt_start(&e, line)?);
            }
            Event::Empty(e) if e.local_name().as_ref() == b"trkpt" => {
                points.push(finish_gpx_point(trkpt_start(&e, line)?)?);
            }
            Event::Start(e) => {
                depth += 1;
                saw_gpx |= e.local_name().as_ref() == b"gpx";
                field = match e.local_name().as_ref() {
                    b"ele" => Some("ele"),
                    b"time" => Some("time"),
                    b"hdop" => Some("hdop"),
                    b"speed" => Some("speed"),
                    b"course" => Some("course"),
                    _ => None,
                };
            }
            Event::Text(t) => {
                if let (Some(name), Some(p)) = (field, current.as_mut()) {
                    let text = t
                        .decode()
                        .map_err(|e| err(line, format!("bad text: {e}")))?;
                    let text = text.trim();
                    match name {
                        "time" => {
                            p.time = Some(
                                DateTime::parse_from_rfc3339(text)
                                    .map_err(|e| err(line, format!("bad time {text:?}: {e}")))?
                                    .with_timezone(&Utc),
                            )
                        }
                        "ele" => p.ele = Some(number(text, "ele", line)?),
                        "hdop" => p.hdop = Some(number(text, "hdop", line)?),
                        "speed" => p.speed = Some(number(text, "speed", line)?),
                        _ => p.course = Some(number(text, "course", line)?),
                    }
                }
            }
            Event::End(e) => {
                depth -= 1;
                field = None;
                if e.local_name().as_ref() == b"trkpt"
                    && let Some(p) = current.take()
                {
                    points.push(finish_gpx_point(p)?);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if depth != 0 || current.is_some() {
        return Err(err(
            lines.at(reader.buffer_position()),
            "document ends inside an element: the track is truncated",
        ));
    }
    if !saw_gpx {
        return Err(err(1, "not a GPX document (no <gpx> element)"));
    }
    Ok(points)
}

fn trkpt_start(
    e: &quick_xml::events::BytesStart<'_>,
    line: usize,
) -> Result<PartialPoint, TrackError> {
    let mut p = PartialPoint {
        line,
        ..PartialPoint::default()
    };
    for attr in e.attributes() {
        let attr = attr.map_err(|e| err(line, format!("bad attribute: {e}")))?;
        let value = attr
            .unescape_value()
            .map_err(|e| err(line, format!("bad attribute value: {e}")))?;
        match attr.key.local_name().as_ref() {
            b"lat" => p.lat = Some(number(&value, "lat", line)?),
            b"lon" => p.lon = Some(number(&value, "lon", line)?),
            _ => {}
        }
    }
    Ok(p)
}

fn finish_gpx_point(p: PartialPoint) -> Result<GnssPoint, TrackError> {
    let line = p.line;
    Ok(GnssPoint {
        ts: p.time.ok_or_else(|| err(line, "trkpt without <time>"))?,
        lat: p.lat.ok_or_else(|| err(line, "trkpt without lat"))?,
        lon: p.lon.ok_or_else(|| err(line, "trkpt without lon"))?,
        alt: p.ele,
        speed: p.speed,
        heading: p.course,
        hdop: p.hdop,
    })
}

fn number(text: &str, what: &str, line: usize) -> Result<f64, TrackError> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| err(line, format!("{what} is not a number: {text:?}")))
}

fn parse_nmea(bytes: &[u8]) -> Result<Vec<GnssPoint>, TrackError> {
    let text = std::str::from_utf8(bytes).map_err(|e| err(1, format!("not UTF-8 text: {e}")))?;
    let mut points: Vec<GnssPoint> = Vec::new();
    // GGA carries hdop and altitude but no date: it is joined to the RMC fix
    // of the same time of day, whichever comes first.
    let mut pending_gga: Option<(NaiveTime, f64, f64)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let sentence = raw.trim();
        if sentence.is_empty() {
            continue;
        }
        let body = checked_body(sentence, line)?;
        let fields: Vec<&str> = body.split(',').collect();
        let kind = fields[0].get(2..).unwrap_or("");
        match kind {
            "RMC" => {
                if fields.len() < 10 {
                    return Err(err(line, "RMC sentence has too few fields"));
                }
                if fields[2] != "A" {
                    continue; // "V": receiver warning, no valid fix
                }
                let time = nmea_time(fields[1], line)?;
                let date = NaiveDate::parse_from_str(fields[9], "%d%m%y")
                    .map_err(|_| err(line, format!("bad RMC date {:?}", fields[9])))?;
                let mut point = GnssPoint {
                    ts: Utc.from_utc_datetime(&date.and_time(time)),
                    lat: nmea_coord(fields[3], fields[4], 2, line)?,
                    lon: nmea_coord(fields[5], fields[6], 3, line)?,
                    alt: None,
                    speed: optional(fields[7], "speed", line)?.map(|k| k * MPS_PER_KNOT),
                    heading: optional(fields[8], "course", line)?,
                    hdop: None,
                };
                if let Some((t, hdop, alt)) = pending_gga.take()
                    && t == time
                {
                    point.hdop = Some(hdop);
                    point.alt = Some(alt);
                }
                points.push(point);
            }
            "GGA" => {
                if fields.len() < 10 {
                    return Err(err(line, "GGA sentence has too few fields"));
                }
                if fields[6] == "0" {
                    continue; // fix quality 0: invalid
                }
                let time = nmea_time(fields[1], line)?;
                let hdop = number(fields[8], "hdop", line)?;
                let alt = number(fields[9], "altitude", line)?;
                match points.last_mut() {
                    Some(last) if last.ts.time() == time && last.hdop.is_none() => {
                        last.hdop = Some(hdop);
                        last.alt = Some(alt);
                    }
                    _ => pending_gga = Some((time, hdop, alt)),
                }
            }
            _ => {} // other sentences (GSV, VTG, …) carry nothing we store
        }
    }
    Ok(points)
}

fn checked_body(sentence: &str, line: usize) -> Result<&str, TrackError> {
    let rest = sentence
        .strip_prefix('$')
        .ok_or_else(|| err(line, "NMEA sentence must start with '$'"))?;
    let (body, sum) = rest
        .split_once('*')
        .ok_or_else(|| err(line, "NMEA sentence has no '*' checksum"))?;
    let expected = u8::from_str_radix(sum.trim(), 16)
        .map_err(|_| err(line, format!("bad NMEA checksum {sum:?}")))?;
    let actual = body.bytes().fold(0u8, |acc, b| acc ^ b);
    if actual != expected {
        return Err(err(
            line,
            format!(
                "NMEA checksum mismatch: sentence says {expected:02X}, content gives {actual:02X}"
            ),
        ));
    }
    Ok(body)
}

fn nmea_time(field: &str, line: usize) -> Result<NaiveTime, TrackError> {
    let bad = || err(line, format!("bad NMEA time {field:?}"));
    // Sliced by byte below: anything but ASCII is refused first.
    if field.len() < 6 || !field.is_ascii() {
        return Err(bad());
    }
    let h: u32 = field[0..2].parse().map_err(|_| bad())?;
    let m: u32 = field[2..4].parse().map_err(|_| bad())?;
    let s: f64 = field[4..].parse().map_err(|_| bad())?;
    let whole = s.trunc() as u32;
    let nanos = ((s - s.trunc()) * 1e9).round() as u32;
    NaiveTime::from_hms_nano_opt(h, m, whole, nanos).ok_or_else(bad)
}

fn nmea_coord(value: &str, hemi: &str, deg_digits: usize, line: usize) -> Result<f64, TrackError> {
    let bad = || err(line, format!("bad NMEA coordinate {value:?} {hemi:?}"));
    // Sliced by byte below: anything but ASCII is refused first.
    if value.len() <= deg_digits || !value.is_ascii() {
        return Err(bad());
    }
    let deg: f64 = value[..deg_digits].parse().map_err(|_| bad())?;
    let min: f64 = value[deg_digits..].parse().map_err(|_| bad())?;
    let v = deg + min / 60.0;
    match hemi {
        "N" | "E" => Ok(v),
        "S" | "W" => Ok(-v),
        _ => Err(bad()),
    }
}

fn optional(field: &str, what: &str, line: usize) -> Result<Option<f64>, TrackError> {
    if field.is_empty() {
        Ok(None)
    } else {
        number(field, what, line).map(Some)
    }
}

/// Writes a GPX 1.1 track; speed and course go in `<extensions>` (GPX 1.1
/// dropped them from the core schema).
pub fn write_gpx(points: &[GnssPoint], creator: &str) -> String {
    let mut s = String::new();
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<gpx version=\"1.1\" creator=\"{creator}\" xmlns=\"http://www.topografix.com/GPX/1/1\">"
    );
    s.push_str("<trk><trkseg>\n");
    for p in points {
        let _ = write!(s, "<trkpt lat=\"{:.7}\" lon=\"{:.7}\">", p.lat, p.lon);
        if let Some(ele) = p.alt {
            let _ = write!(s, "<ele>{ele:.1}</ele>");
        }
        let _ = write!(
            s,
            "<time>{}</time>",
            p.ts.to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        if let Some(hdop) = p.hdop {
            let _ = write!(s, "<hdop>{hdop:.1}</hdop>");
        }
        if p.speed.is_some() || p.heading.is_some() {
            s.push_str("<extensions>");
            if let Some(v) = p.speed {
                let _ = write!(s, "<speed>{v:.2}</speed>");
            }
            if let Some(v) = p.heading {
                let _ = write!(s, "<course>{v:.1}</course>");
            }
            s.push_str("</extensions>");
        }
        s.push_str("</trkpt>\n");
    }
    s.push_str("</trkseg></trk>\n</gpx>\n");
    s
}

/// Writes an NMEA 0183 log: a `$GPRMC` and a `$GPGGA` per fix.
pub fn write_nmea(points: &[GnssPoint]) -> String {
    let mut s = String::new();
    for p in points {
        let time = p.ts.format("%H%M%S%.3f").to_string();
        let date = p.ts.format("%d%m%y").to_string();
        let (lat, ns) = nmea_deg(p.lat, 2, 'N', 'S');
        let (lon, ew) = nmea_deg(p.lon, 3, 'E', 'W');
        let knots = p
            .speed
            .map(|v| format!("{:.2}", v / MPS_PER_KNOT))
            .unwrap_or_default();
        let course = p.heading.map(|v| format!("{v:.1}")).unwrap_or_default();
        push_sentence(
            &mut s,
            &format!("GPRMC,{time},A,{lat},{ns},{lon},{ew},{knots},{course},{date},,,A"),
        );
        let hdop = p.hdop.unwrap_or(1.0);
        let alt = p.alt.unwrap_or(0.0);
        push_sentence(
            &mut s,
            &format!("GPGGA,{time},{lat},{ns},{lon},{ew},1,08,{hdop:.1},{alt:.1},M,17.0,M,,"),
        );
    }
    s
}

fn nmea_deg(v: f64, deg_digits: usize, pos: char, neg: char) -> (String, char) {
    let a = v.abs();
    let deg = a.trunc();
    let min = (a - deg) * 60.0;
    let text = format!("{:0width$}{:07.4}", deg as u32, min, width = deg_digits);
    (text, if v < 0.0 { neg } else { pos })
}

fn push_sentence(out: &mut String, body: &str) {
    let sum = body.bytes().fold(0u8, |acc, b| acc ^ b);
    let _ = writeln!(out, "${body}*{sum:02X}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<GnssPoint> {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
        (0..5)
            .map(|i| GnssPoint {
                ts: t0 + chrono::Duration::milliseconds(500 * i),
                lat: 60.1699 + i as f64 * 1e-5,
                lon: 24.9384 - i as f64 * 1e-5,
                alt: Some(12.5),
                speed: Some(8.25),
                heading: Some(271.5),
                hdop: Some(0.9),
            })
            .collect()
    }

    #[test]
    fn gpx_round_trips() {
        let pts = sample();
        let back = parse(write_gpx(&pts, "test").as_bytes(), TrackFormat::Gpx).unwrap();
        assert_eq!(back.len(), pts.len());
        for (a, b) in pts.iter().zip(&back) {
            assert_eq!(a.ts, b.ts);
            assert!((a.lat - b.lat).abs() < 1e-7 && (a.lon - b.lon).abs() < 1e-7);
            assert_eq!(b.hdop, Some(0.9));
            assert_eq!(b.speed, Some(8.25));
        }
    }

    #[test]
    fn nmea_round_trips() {
        let pts = sample();
        let back = parse(write_nmea(&pts).as_bytes(), TrackFormat::Nmea).unwrap();
        assert_eq!(back.len(), pts.len());
        for (a, b) in pts.iter().zip(&back) {
            assert_eq!(a.ts, b.ts);
            assert!((a.lat - b.lat).abs() < 1e-6, "{} {}", a.lat, b.lat);
            assert!((a.lon - b.lon).abs() < 1e-6);
            assert!((b.speed.unwrap() - 8.25).abs() < 0.01);
            assert_eq!(b.hdop, Some(0.9));
        }
    }

    #[test]
    fn nmea_checksum_mismatch_names_the_line() {
        let text = "$GPRMC,080000.000,A,6010.1940,N,02456.3040,E,0.00,0.0,011126,,,A*00\n";
        let e = parse(text.as_bytes(), TrackFormat::Nmea).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("checksum"), "{e}");
    }

    #[test]
    fn gpx_without_time_is_refused() {
        let doc = "<gpx version=\"1.1\"><trk><trkseg><trkpt lat=\"1\" lon=\"2\"></trkpt></trkseg></trk></gpx>";
        let e = parse(doc.as_bytes(), TrackFormat::Gpx).unwrap_err();
        assert!(e.message.contains("time"), "{e}");
    }

    #[test]
    fn truncated_gpx_is_refused() {
        let mut doc = write_gpx(&sample(), "t");
        doc.truncate(doc.len() / 2);
        assert!(parse(doc.as_bytes(), TrackFormat::Gpx).is_err());
    }

    #[test]
    fn not_gpx_is_refused() {
        assert!(parse(b"<html></html>", TrackFormat::Gpx).is_err());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn points() -> impl Strategy<Value = Vec<GnssPoint>> {
        proptest::collection::vec(
            (
                -89.0f64..89.0,
                -179.0f64..179.0,
                0.0f64..70.0,
                0.0f64..359.9,
                0.1f64..20.0,
            ),
            1..40,
        )
        .prop_map(|fixes| {
            let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
            fixes
                .into_iter()
                .enumerate()
                .map(|(i, (lat, lon, speed, heading, hdop))| GnssPoint {
                    ts: t0 + chrono::Duration::seconds(i as i64),
                    lat,
                    lon,
                    alt: Some(10.0),
                    speed: Some(speed),
                    heading: Some(heading),
                    hdop: Some((hdop * 10.0).round() / 10.0),
                })
                .collect()
        })
    }

    /// Issue 14: a multi-byte character where NMEA expects digits panicked
    /// validation (and left the upload stuck); it is a refusal now.
    #[test]
    fn nmea_with_a_multi_byte_character_is_refused_not_a_panic() {
        for sentence in [
            "GPRMC,1é2345.00,A,6010.0000,N,02456.0000,E,0.0,0.0,011126,,",
            "GPRMC,123456.00,A,6é10.0000,N,02456.0000,E,0.0,0.0,011126,,",
            "GPRMC,123456.00,A,6010.0000,N,0é456.0000,E,0.0,0.0,011126,,",
        ] {
            let sum = sentence.bytes().fold(0u8, |a, b| a ^ b);
            let text = format!("${sentence}*{sum:02X}\n");
            let e = parse(text.as_bytes(), TrackFormat::Nmea).unwrap_err();
            assert_eq!(e.line, 1, "{e}");
        }
    }

    /// Issue 14: line numbers were counted from byte 0 at every XML event,
    /// so a day-long track took hours. Lines are now counted forward once;
    /// this checks they still come out right (speed is for the benchmark).
    #[test]
    fn gpx_lines_are_counted_in_one_pass() {
        let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
        let pts: Vec<GnssPoint> = (0..10_000)
            .map(|i| GnssPoint {
                ts: t0 + chrono::Duration::seconds(i),
                lat: 60.0 + i as f64 * 1e-5,
                lon: 24.0,
                alt: None,
                speed: None,
                heading: None,
                hdop: None,
            })
            .collect();
        let text = write_gpx(&pts, "test");
        let mut lines = Lines::new(text.as_bytes());
        for pos in (0..text.len()).step_by(4099) {
            let naive = 1 + text.as_bytes()[..pos]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            assert_eq!(lines.at(pos as u64), naive, "line at byte {pos}");
            assert_eq!(lines.counted_to, pos, "counted no further than asked");
        }
        assert_eq!(
            parse(text.as_bytes(), TrackFormat::Gpx).unwrap().len(),
            10_000
        );
    }

    proptest! {
        /// Arbitrary bytes never panic either parser.
        #[test]
        fn any_bytes_are_read_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes, TrackFormat::Gpx);
            let _ = parse(&bytes, TrackFormat::Nmea);
        }

        /// A real document cut anywhere, or with one byte changed, is read
        /// or refused with the line it failed at, never a panic.
        #[test]
        fn damaged_tracks_are_read_or_refused(
            pts in points(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            for doc in [write_gpx(&pts, "p").into_bytes(), write_nmea(&pts).into_bytes()] {
                let format = if doc.starts_with(b"<") { TrackFormat::Gpx } else { TrackFormat::Nmea };
                let mut short = doc.clone();
                short.truncate(cut.index(doc.len()));
                if let Err(e) = parse(&short, format) {
                    prop_assert!(e.line >= 1);
                }
                let mut changed = doc.clone();
                changed[flip.index(doc.len())] = byte;
                if let Err(e) = parse(&changed, format) {
                    prop_assert!(e.line >= 1);
                }
            }
        }

        /// What hexroad writes, it reads back: same times, same places.
        #[test]
        fn written_tracks_read_back(pts in points()) {
            let gpx = parse(write_gpx(&pts, "p").as_bytes(), TrackFormat::Gpx).unwrap();
            let nmea = parse(write_nmea(&pts).as_bytes(), TrackFormat::Nmea).unwrap();
            prop_assert_eq!(gpx.len(), pts.len());
            prop_assert_eq!(nmea.len(), pts.len());
            for ((a, g), n) in pts.iter().zip(&gpx).zip(&nmea) {
                prop_assert_eq!(a.ts, g.ts);
                prop_assert_eq!(a.ts, n.ts);
                prop_assert!((a.lat - g.lat).abs() < 1e-6 && (a.lon - g.lon).abs() < 1e-6);
                prop_assert!((a.lat - n.lat).abs() < 1e-5 && (a.lon - n.lon).abs() < 1e-5);
            }
        }
    }
}
