//! Probing uploaded video: container, codec, picture, rate and length,
//! from headers only. The pipeline is pinned (`filesrc ! qtdemux !
//! h264parse ! fakesink`): no element is chosen by the file's content, and
//! nothing is decoded.

use std::path::Path;
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;
use serde_json::json;

use crate::{MediaLimits, Rejection};

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), String> {
    gst::init().map_err(|e| e.to_string())
}

/// What the demuxer and parser said about the first video stream.
#[derive(Default)]
struct Seen {
    /// Caps of the first video stream qtdemux exposed, if any.
    video_caps: Option<String>,
    /// The camera's recording time, from the container's tags.
    recorded_at: Option<String>,
}

/// How long the headers may take to read.
const PROBE_TIMEOUT: gst::ClockTime = gst::ClockTime::from_seconds(15);

/// Checks that a file is an MP4 (ISO BMFF / QuickTime) with an H.264 video
/// stream, returning its duration, size and frame rate as JSON.
pub fn probe_mp4(path: &Path, limits: &MediaLimits) -> Result<serde_json::Value, Rejection> {
    let corrupt = |m: String| Rejection::new("corrupt_video", m);
    let failed = |m: String| Rejection::new("probe_failed", m);
    if let Some(found) = not_iso_bmff(path) {
        return Err(Rejection::new(
            "unsupported_container",
            format!("expected an MP4 container, found {found}"),
        ));
    }
    let pipeline = gst::Pipeline::new();
    let make = |factory: &str| {
        gst::ElementFactory::make(factory)
            .build()
            .map_err(|e| failed(format!("GStreamer element {factory} is missing: {e}")))
    };
    let (src, demux, parse, sink) = (
        make("filesrc")?,
        make("qtdemux")?,
        make("h264parse")?,
        make("fakesink")?,
    );
    src.set_property("location", path.to_string_lossy().to_string());
    pipeline
        .add_many([&src, &demux, &parse, &sink])
        .map_err(|e| failed(e.to_string()))?;
    src.link(&demux).map_err(|e| failed(e.to_string()))?;
    parse.link(&sink).map_err(|e| failed(e.to_string()))?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    watch_streams(&demux, &parse, &seen);
    let stop = |p: &gst::Pipeline| {
        let _ = p.set_state(gst::State::Null);
    };
    if pipeline.set_state(gst::State::Paused).is_err() {
        stop(&pipeline);
        return Err(corrupt(
            "GStreamer could not start reading the video".into(),
        ));
    }
    let bus = pipeline.bus().ok_or_else(|| failed("no bus".into()))?;
    let outcome = bus.timed_pop_filtered(
        PROBE_TIMEOUT,
        &[gst::MessageType::AsyncDone, gst::MessageType::Error],
    );
    let duration = pipeline.query_duration::<gst::ClockTime>();
    let caps = parse.static_pad("src").and_then(|p| p.current_caps());
    stop(&pipeline);
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    match outcome.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::AsyncDone(_)) => {}
        Some(gst::MessageView::Error(e)) => {
            return Err(match seen.video_caps {
                Some(codec) if !codec.starts_with("video/x-h264") => unsupported_codec(&codec),
                _ => corrupt(format!("GStreamer could not read the video: {}", e.error())),
            });
        }
        _ => return Err(corrupt("the video's headers did not arrive in time".into())),
    }
    let Some(codec) = seen.video_caps else {
        return Err(corrupt("the MP4 has no video stream".into()));
    };
    if !codec.starts_with("video/x-h264") {
        return Err(unsupported_codec(&codec));
    }
    let structure = caps
        .as_ref()
        .and_then(|c| c.structure(0).map(|s| s.to_owned()))
        .ok_or_else(|| corrupt("the H.264 stream has no readable parameters".into()))?;
    let width = structure.get::<i32>("width").unwrap_or(0);
    let height = structure.get::<i32>("height").unwrap_or(0);
    let rate = structure
        .get::<gst::Fraction>("framerate")
        .unwrap_or(gst::Fraction::new(0, 1));
    let duration = duration.map(gst::ClockTime::mseconds).unwrap_or(0);
    if duration == 0 {
        return Err(corrupt("the video has no duration (truncated?)".into()));
    }
    let fps = if rate.denom() == 0 {
        0.0
    } else {
        f64::from(rate.numer()) / f64::from(rate.denom())
    };
    let (width, height) = (
        u32::try_from(width).unwrap_or(0),
        u32::try_from(height).unwrap_or(0),
    );
    check_video_limits(path, limits, width, height, duration, fps)?;
    Ok(json!({
        // When recording began, if the camera wrote it: frames are placed
        // on the GNSS track from this instant.
        "recorded_at": seen.recorded_at,
        "container": "mp4",
        "codec": "h264",
        "duration_ms": duration,
        "width": width,
        "height": height,
        "fps": fps,
    }))
}

/// What the file starts with, when that is not an ISO BMFF box (MP4 and
/// QuickTime start with `ftyp`, or with `moov`, `mdat`, `free`, `skip` or
/// `wide` in older QuickTime files).
fn not_iso_bmff(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 8];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
    if read.is_err() {
        return Some("a file shorter than one box header".into());
    }
    let kind = &head[4..8];
    let known: [&[u8]; 6] = [b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide"];
    if known.contains(&kind) {
        None
    } else {
        Some(format!("{:?}", String::from_utf8_lossy(kind)))
    }
}

fn unsupported_codec(caps: &str) -> Rejection {
    let name = caps.split(',').next().unwrap_or(caps);
    Rejection::new(
        "unsupported_codec",
        format!("expected H.264 video, found {name:?}"),
    )
}

/// Links qtdemux's first video stream to the parser, noting its caps and
/// the container's recording time as they pass.
fn watch_streams(demux: &gst::Element, parse: &gst::Element, seen: &Arc<Mutex<Seen>>) {
    let parse = parse.downgrade();
    let seen = Arc::clone(seen);
    demux.connect_pad_added(move |_, pad| {
        if !pad.name().starts_with("video_") {
            return;
        }
        let caps = pad
            .current_caps()
            .or_else(|| Some(pad.query_caps(None)))
            .map(|c| c.to_string())
            .unwrap_or_default();
        {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.video_caps.is_some() {
                return;
            }
            seen.video_caps = Some(caps);
        }
        let tags_seen = Arc::clone(&seen);
        pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(event)) = &info.data
                && let gst::EventView::Tag(tag) = event.view()
                && let Some(when) = tag.tag().get::<gst::tags::DateTime>()
                && let Ok(text) = when.get().to_iso8601_string()
            {
                let mut seen = tags_seen.lock().unwrap_or_else(|e| e.into_inner());
                seen.recorded_at.get_or_insert_with(|| text.to_string());
            }
            gst::PadProbeReturn::Ok
        });
        if let Some(sinkpad) = parse.upgrade().and_then(|p| p.static_pad("sink")) {
            let _ = pad.link(&sinkpad);
        }
    });
}

/// Refuses a video whose declared picture, length, bitrate or frame count
/// is beyond the limits: what a decoder would allocate is known here, from
/// the headers, before anything is decoded.
fn check_video_limits(
    path: &Path,
    limits: &MediaLimits,
    width: u32,
    height: u32,
    duration_ms: u64,
    fps: f64,
) -> Result<(), Rejection> {
    let too_large = |m: String| Rejection::new("too_large", m);
    limits
        .check_picture(width.into(), height.into())
        .map_err(|m| too_large(format!("the video's picture {m}")))?;
    let max_ms = u64::try_from(limits.max_video_duration.as_millis()).unwrap_or(u64::MAX);
    if duration_ms > max_ms {
        return Err(too_large(format!(
            "the video runs {} s; the limit is {} s",
            duration_ms / 1000,
            max_ms / 1000
        )));
    }
    let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
    let bitrate = bytes.saturating_mul(8).saturating_mul(1000) / duration_ms.max(1);
    if bitrate > limits.max_video_bitrate {
        return Err(too_large(format!(
            "the video averages {bitrate} bit/s; the limit is {}",
            limits.max_video_bitrate
        )));
    }
    let frames = (fps * duration_ms as f64 / 1000.0).ceil();
    if !frames.is_finite() || frames > limits.max_frames as f64 {
        return Err(too_large(format!(
            "the video declares {frames} frames; the limit is {}",
            limits.max_frames
        )));
    }
    Ok(())
}
