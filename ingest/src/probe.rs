//! Probing uploaded video with GStreamer's discoverer: container and codec.

use std::path::Path;

use gstreamer as gst;
use gstreamer_pbutils::prelude::*;
use gstreamer_pbutils::{Discoverer, DiscovererResult};
use serde_json::json;

use crate::{MediaLimits, Rejection};

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), String> {
    gst::init().map_err(|e| e.to_string())
}

/// Checks that a file is an MP4 (ISO BMFF / QuickTime) with an H.264 video
/// stream, returning its duration, size and frame rate as JSON.
pub fn probe_mp4(path: &Path, limits: &MediaLimits) -> Result<serde_json::Value, Rejection> {
    let corrupt = |m: String| Rejection::new("corrupt_video", m);
    let uri = gst::glib::filename_to_uri(path, None)
        .map_err(|e| Rejection::new("unreadable", format!("no URI for the upload: {e}")))?;
    let discoverer = Discoverer::new(gst::ClockTime::from_seconds(15))
        .map_err(|e| Rejection::new("probe_failed", format!("creating the discoverer: {e}")))?;
    let info = discoverer
        .discover_uri(&uri)
        .map_err(|e| corrupt(format!("GStreamer could not read the video: {e}")))?;
    if info.result() != DiscovererResult::Ok {
        return Err(corrupt(format!(
            "GStreamer could not read the video ({:?})",
            info.result()
        )));
    }
    let container = info
        .stream_info()
        .and_then(|s| s.caps())
        .and_then(|c| c.structure(0).map(|s| s.name().to_string()))
        .unwrap_or_default();
    if container != "video/quicktime" {
        return Err(Rejection::new(
            "unsupported_container",
            format!(
                "expected an MP4 container, found {:?}",
                if container.is_empty() {
                    "nothing"
                } else {
                    &container
                }
            ),
        ));
    }
    let streams = info.video_streams();
    let video = streams
        .first()
        .ok_or_else(|| corrupt("the MP4 has no video stream".into()))?;
    let codec = video
        .caps()
        .and_then(|c| c.structure(0).map(|s| s.name().to_string()))
        .unwrap_or_default();
    if codec != "video/x-h264" {
        return Err(Rejection::new(
            "unsupported_codec",
            format!("expected H.264 video, found {codec:?}"),
        ));
    }
    let duration = info.duration().map(|d| d.mseconds()).unwrap_or(0);
    if duration == 0 {
        return Err(corrupt("the video has no duration (truncated?)".into()));
    }
    let rate = video.framerate();
    let fps = if rate.denom() == 0 {
        0.0
    } else {
        f64::from(rate.numer()) / f64::from(rate.denom())
    };
    check_video_limits(path, limits, video.width(), video.height(), duration, fps)?;
    // When recording began, if the camera wrote it: frames are placed on the
    // GNSS track from this instant.
    let recorded_at = info
        .tags()
        .and_then(|t| t.get::<gst::tags::DateTime>())
        .and_then(|d| d.get().to_iso8601_string().ok())
        .map(|s| s.to_string());
    Ok(json!({
        "recorded_at": recorded_at,
        "container": "mp4",
        "codec": "h264",
        "duration_ms": duration,
        "width": video.width(),
        "height": video.height(),
        "fps": fps,
    }))
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
