//! Dashcam video: a synthetic road scene that moves with the car, with the
//! time, position and speed burned in, encoded to H.264 in MP4 by GStreamer.

use std::path::Path;

use chrono::{Datelike, Timelike};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::AppSrc;

use crate::SimError;
use crate::drive::{STEP_S, Sample};

/// Frame size and rate of the simulated camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoSpec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl Default for VideoSpec {
    fn default() -> Self {
        Self {
            width: 640,
            height: 360,
            fps: 10,
        }
    }
}

impl std::str::FromStr for VideoSpec {
    type Err = String;
    /// `640x360@10`
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("video spec must look like 640x360@10, got {s:?}");
        let (size, fps) = s.split_once('@').ok_or_else(bad)?;
        let (w, h) = size.split_once('x').ok_or_else(bad)?;
        let spec = Self {
            width: w.parse().map_err(|_| bad())?,
            height: h.parse().map_err(|_| bad())?,
            fps: fps.parse().map_err(|_| bad())?,
        };
        if spec.width < 160
            || spec.height < 120
            || !spec.width.is_multiple_of(2)
            || !spec.height.is_multiple_of(2)
        {
            return Err(format!(
                "video must be at least 160x120 with even sides, got {s:?}"
            ));
        }
        if !(1..=60).contains(&spec.fps) {
            return Err(format!("fps must be 1-60, got {}", spec.fps));
        }
        Ok(spec)
    }
}

/// Encodes the drive as seen from the car to an MP4 file.
pub fn encode(
    samples: &[Sample],
    spec: VideoSpec,
    label: &str,
    out: &Path,
) -> Result<(), SimError> {
    let gst_err = |e: &dyn std::fmt::Display| SimError::Video(e.to_string());
    gst::init().map_err(|e| gst_err(&e))?;
    let desc = format!(
        "appsrc name=src format=time block=true max-bytes=16000000 \
         caps=video/x-raw,format=RGBx,width={w},height={h},framerate={fps}/1 \
         ! videoconvert ! video/x-raw,format=I420 \
         ! x264enc speed-preset=ultrafast tune=zerolatency key-int-max={gop} threads=1 \
         ! h264parse ! mp4mux name=mux ! filesink name=sink",
        w = spec.width,
        h = spec.height,
        fps = spec.fps,
        gop = spec.fps * 2,
    );
    let pipeline = gst::parse::launch(&desc)
        .map_err(|e| gst_err(&e))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| SimError::Video("not a pipeline".into()))?;
    let element = |name: &str| {
        pipeline
            .by_name(name)
            .ok_or_else(|| SimError::Video(format!("pipeline has no {name}")))
    };
    element("sink")?.set_property("location", out.to_string_lossy().to_string());
    if let (Some(first), Ok(mux)) = (samples.first(), element("mux"))
        && let Some(setter) = mux.dynamic_cast_ref::<gst::TagSetter>()
        && let Ok(when) = gst::DateTime::new(
            0.0,
            first.ts.year(),
            first.ts.month() as i32,
            first.ts.day() as i32,
            first.ts.hour() as i32,
            first.ts.minute() as i32,
            f64::from(first.ts.second()),
        )
    {
        // The recording time, not the encoding time: the file is then the
        // same bytes whenever the same drive is encoded.
        setter.add_tag::<gst::tags::DateTime>(&when, gst::TagMergeMode::Replace);
    }
    let src = element("src")?
        .downcast::<AppSrc>()
        .map_err(|_| SimError::Video("src is not an appsrc".into()))?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| gst_err(&e))?;

    let frame_s = 1.0 / f64::from(spec.fps);
    let duration_s = samples.len() as f64 * STEP_S;
    let frames = (duration_s / frame_s).floor() as u64;
    let mut painter = Painter::new(spec);
    let mut push_result = Ok(());
    for i in 0..frames {
        let t = i as f64 * frame_s;
        let idx = ((t / STEP_S).round() as usize).min(samples.len() - 1);
        let pixels = painter.paint(&samples[idx], label);
        let mut buffer = gst::Buffer::from_mut_slice(pixels);
        if let Some(b) = buffer.get_mut() {
            let ns = 1_000_000_000 / u64::from(spec.fps);
            b.set_pts(gst::ClockTime::from_nseconds(i * ns));
            b.set_duration(gst::ClockTime::from_nseconds(ns));
        }
        if let Err(e) = src.push_buffer(buffer) {
            push_result = Err(SimError::Video(format!("pushing frame {i}: {e:?}")));
            break;
        }
    }
    let _ = src.end_of_stream();
    // mp4mux writes its index only at end-of-stream: wait for it.
    let bus = pipeline
        .bus()
        .ok_or_else(|| SimError::Video("pipeline has no bus".into()))?;
    let mut outcome = push_result;
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(err) => {
                outcome = Err(SimError::Video(format!(
                    "{}: {}",
                    err.src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_default(),
                    err.error()
                )));
                break;
            }
            _ => {}
        }
    }
    pipeline
        .set_state(gst::State::Null)
        .map_err(|e| gst_err(&e))?;
    outcome
}

/// Draws frames into a reused RGBx buffer.
struct Painter {
    spec: VideoSpec,
}

impl Painter {
    fn new(spec: VideoSpec) -> Self {
        Self { spec }
    }

    fn paint(&mut self, s: &Sample, label: &str) -> Vec<u8> {
        let (w, h) = (self.spec.width as usize, self.spec.height as usize);
        let mut px = vec![0u8; w * h * 4];
        let horizon = h * 2 / 5;
        // Sky: a gradient tinted by heading, so turns show.
        let tint = (s.heading / 360.0 * 60.0) as u8;
        for y in 0..horizon {
            let shade = 150 + (y * 90 / horizon.max(1)) as u8 / 2;
            fill(&mut px, w, y, 0, w, [shade / 2 + tint, shade, 230]);
        }
        // Ground: road in perspective, dashes and facades moving with distance.
        for y in horizon..h {
            let depth_px = (y - horizon + 1) as f64;
            let z = 400.0 / depth_px; // metres ahead seen on this row
            let road_half = (depth_px * w as f64 / (2.0 * (h - horizon) as f64) * 0.9) as usize;
            let cx = w / 2;
            let left = cx.saturating_sub(road_half);
            let right = (cx + road_half).min(w);
            let along = z + s.distance_m;
            let block = (along / 12.0).floor() as i64;
            let hue = (block.wrapping_mul(2_654_435_761) >> 8) as u8;
            fill(
                &mut px,
                w,
                y,
                0,
                left,
                [90 + hue / 3, 80 + hue / 4, 70 + hue / 5],
            );
            fill(
                &mut px,
                w,
                y,
                right,
                w,
                [70 + hue / 5, 80 + hue / 4, 90 + hue / 3],
            );
            fill(&mut px, w, y, left, right, [70, 70, 75]);
            if along.rem_euclid(6.0) < 3.0 {
                let half = (road_half / 40).max(1);
                fill(&mut px, w, y, cx - half, cx + half, [235, 235, 235]);
            }
        }
        let t = format!(
            "{}.{}Z",
            s.ts.format("%Y-%m-%dT%H:%M:%S"),
            s.ts.timestamp_subsec_millis() / 100
        );
        let pos = format!(
            "{:.6}{} {:.6}{}",
            s.lat.abs(),
            if s.lat >= 0.0 { 'N' } else { 'S' },
            s.lon.abs(),
            if s.lon >= 0.0 { 'E' } else { 'W' }
        );
        let speed = format!("{:.0} KMH DEV {label}", s.speed * 3.6);
        let scale = (w / 320).max(1);
        for (row, text) in [t, pos, speed].iter().enumerate() {
            let y = 4 + row * 9 * scale;
            // A dark band behind the text keeps it legible on any scene.
            for yy in y.saturating_sub(1)..(y + 8 * scale).min(h) {
                fill(
                    &mut px,
                    w,
                    yy,
                    2,
                    (4 + text.len() * 6 * scale).min(w),
                    [0, 0, 0],
                );
            }
            draw_text(&mut px, w, h, 4, y, scale, text);
        }
        px
    }
}

fn fill(px: &mut [u8], w: usize, y: usize, x0: usize, x1: usize, rgb: [u8; 3]) {
    if x0 >= x1 {
        return;
    }
    let row = &mut px[(y * w + x0) * 4..(y * w + x1) * 4];
    for p in row.chunks_exact_mut(4) {
        p[..3].copy_from_slice(&rgb);
    }
}

/// 5×7 glyphs, one row per byte (bit 4 is the left column).
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [28, 18, 17, 17, 17, 18, 28],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        _ => [0; 7],
    }
}

fn draw_text(px: &mut [u8], w: usize, h: usize, x: usize, y: usize, scale: usize, text: &str) {
    for (i, c) in text.chars().enumerate() {
        let g = glyph(c);
        let gx = x + i * 6 * scale;
        for (row, bits) in g.iter().enumerate() {
            for col in 0..5 {
                if bits & (16 >> col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    let yy = y + row * scale + dy;
                    let x0 = gx + col * scale;
                    if yy < h && x0 + scale <= w {
                        fill(px, w, yy, x0, x0 + scale, [255, 255, 80]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_and_refuses_odd_sizes() {
        assert_eq!("320x240@5".parse::<VideoSpec>().unwrap().fps, 5);
        assert!("321x240@5".parse::<VideoSpec>().is_err());
        assert!("320x240".parse::<VideoSpec>().is_err());
    }
}
