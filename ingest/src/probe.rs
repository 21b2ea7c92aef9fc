//! Probing uploaded video with GStreamer's discoverer: container and codec.

use std::path::Path;

use gstreamer as gst;
use gstreamer_pbutils::prelude::*;
use gstreamer_pbutils::{Discoverer, DiscovererResult};
use serde_json::json;

use crate::Rejection;

/// Initialises GStreamer once per process.
pub fn init() -> Result<(), String> {
    gst::init().map_err(|e| e.to_string())
}

/// Checks that a file is an MP4 (ISO BMFF / QuickTime) with an H.264 video
/// stream, returning its duration, size and frame rate as JSON.
pub fn probe_mp4(path: &Path) -> Result<serde_json::Value, Rejection> {
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
        "fps": if rate.denom() == 0 { 0.0 } else { f64::from(rate.numer()) / f64::from(rate.denom()) },
    }))
}
