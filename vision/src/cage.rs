//! Decoding untrusted video in a child process. GStreamer's demuxer, parser
//! and decoder are C code fed bytes from strangers; a crash, a runaway
//! allocation or an endless loop there must cost one upload, not the
//! server. The child (`hexroad decode-video`) runs under `prlimit` with a
//! cap on address space, CPU time and file writes, and the parent kills it
//! at a wall-clock deadline. Pictures come back over a pipe, packed I420.
//!
//! The pipe carries, per picture, a 16-byte header (pts in nanoseconds,
//! width, height; little-endian u64, u32, u32) and the Y, U and V planes
//! packed tight; a header with width 0 ends the stream.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::video::{self, Flow, Picture, VideoInfo};
use crate::{Error, Result};

/// What one caged decode may use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeLimits {
    /// Address space of the decoding process, MiB.
    pub memory_mib: u64,
    /// CPU time of the decoding process.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub cpu_time: Duration,
    /// Wall-clock time for one upload's decode, waits included.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub wall_time: Duration,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            memory_mib: 4096,
            cpu_time: Duration::from_secs(20 * 60),
            wall_time: Duration::from_secs(30 * 60),
        }
    }
}

/// The program whose `decode-video` subcommand decodes, and its limits.
#[derive(Debug, Clone)]
pub struct DecodeCage {
    pub program: PathBuf,
    pub limits: DecodeLimits,
}

/// Chroma plane size for a picture: half each way, rounded up.
fn chroma(width: u32, height: u32) -> (usize, usize) {
    (width.div_ceil(2) as usize, height.div_ceil(2) as usize)
}

/// The child's side: decodes `path` (in-process, pinned pipeline) and
/// writes every picture to `out`. Returns what the decoder learnt.
pub fn decode_to_pipe(path: &Path, out: impl Write) -> Result<VideoInfo> {
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let pipe_err = |e: std::io::Error| Error::Internal(format!("writing a picture: {e}"));
    let info = video::decode(path, |p| {
        let (cw, ch) = chroma(p.width, p.height);
        let mut header = [0u8; 16];
        header[..8].copy_from_slice(&(p.pts.as_nanos() as u64).to_le_bytes());
        header[8..12].copy_from_slice(&p.width.to_le_bytes());
        header[12..].copy_from_slice(&p.height.to_le_bytes());
        out.write_all(&header).map_err(pipe_err)?;
        let rows = [(p.width as usize, p.height as usize), (cw, ch), (cw, ch)];
        for ((plane, stride), (w, h)) in p.planes.iter().zip(p.strides).zip(rows) {
            for r in 0..h {
                let row = plane
                    .get(r * stride..r * stride + w)
                    .ok_or_else(|| Error::Frame("a plane shorter than its picture".into()))?;
                out.write_all(row).map_err(pipe_err)?;
            }
        }
        Ok(Flow::Continue)
    })?;
    out.write_all(&[0u8; 16]).map_err(pipe_err)?;
    out.flush().map_err(pipe_err)?;
    Ok(info)
}

/// Decodes `path` in a caged child, calling `on_picture` for each picture
/// in order, like [`video::decode`].
pub fn decode(
    cage: &DecodeCage,
    path: &Path,
    max_pixels: u64,
    mut on_picture: impl FnMut(Picture<'_>) -> Result<Flow>,
) -> Result<VideoInfo> {
    let video_err = |reason: String| Error::Video {
        path: path.to_owned(),
        reason,
    };
    let limits = cage.limits;
    let mut child = Command::new("prlimit")
        .arg(format!(
            "--as={}",
            limits.memory_mib.saturating_mul(1 << 20)
        ))
        .arg(format!("--cpu={}", limits.cpu_time.as_secs().max(1)))
        .arg("--fsize=0")
        .arg("--core=0")
        .arg("--")
        .arg(&cage.program)
        .arg("decode-video")
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::Internal(format!(
                "starting the caged decoder ({} under prlimit, from util-linux): {e}",
                cage.program.display()
            ))
        })?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Error::Internal("the decoder's pipes are missing".into()));
    };
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let child = Arc::new(Mutex::new(child));
    let (done, timed_out) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let watchdog = {
        let (child, done, timed_out) = (
            Arc::clone(&child),
            Arc::clone(&done),
            Arc::clone(&timed_out),
        );
        let deadline = Instant::now() + limits.wall_time;
        std::thread::spawn(move || {
            while !done.load(Ordering::Acquire) {
                if Instant::now() >= deadline {
                    timed_out.store(true, Ordering::Release);
                    let _ = child.lock().unwrap_or_else(|e| e.into_inner()).kill();
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let read = read_pictures(
        BufReader::with_capacity(1 << 20, stdout),
        max_pixels,
        &mut on_picture,
    );
    done.store(true, Ordering::Release);
    if !matches!(read, Ok((_, End::Marker))) {
        // Stopped early or failed: the child may still be writing.
        let _ = child.lock().unwrap_or_else(|e| e.into_inner()).kill();
    }
    let status = child.lock().unwrap_or_else(|e| e.into_inner()).wait();
    let _ = watchdog.join();
    let stderr = errors.join().unwrap_or_default();
    let (info, end) = read?;
    match end {
        End::Marker => finished(info, &video_err),
        End::Stopped => Ok(info),
        End::Closed if timed_out.load(Ordering::Acquire) => Err(video_err(format!(
            "decoding took longer than the limit of {} s and was stopped",
            limits.wall_time.as_secs()
        ))),
        End::Closed => {
            let said = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            Err(video_err(match status {
                Ok(s) if s.code().is_some() && !said.is_empty() => said.to_owned(),
                Ok(s) => format!(
                    "the decoder died ({s}): over its limits ({} MiB, {} s of CPU) or crashed",
                    limits.memory_mib,
                    limits.cpu_time.as_secs()
                ),
                Err(e) => format!("waiting for the decoder: {e}"),
            }))
        }
    }
}

/// How the stream of pictures ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The child wrote its end marker: every picture arrived.
    Marker,
    /// The pipe closed before the marker: the child failed or was killed.
    Closed,
    /// The caller asked for no more pictures.
    Stopped,
}

fn finished(info: VideoInfo, video_err: &dyn Fn(String) -> Error) -> Result<VideoInfo> {
    if info.frames == 0 {
        return Err(video_err("no video frames could be decoded".into()));
    }
    Ok(info)
}

/// Reads pictures until the end marker, the pipe closing, or the caller
/// stopping.
fn read_pictures(
    mut pipe: impl Read,
    max_pixels: u64,
    on_picture: &mut dyn FnMut(Picture<'_>) -> Result<Flow>,
) -> Result<(VideoInfo, End)> {
    let mut info = VideoInfo::default();
    let mut buf = Vec::new();
    loop {
        let mut header = [0u8; 16];
        if pipe.read_exact(&mut header).is_err() {
            return Ok((info, End::Closed));
        }
        let word = |r: std::ops::Range<usize>| {
            header[r]
                .iter()
                .rev()
                .fold(0u64, |a, b| a << 8 | u64::from(*b))
        };
        let (pts, width, height) = (word(0..8), word(8..12) as u32, word(12..16) as u32);
        if width == 0 {
            return Ok((info, End::Marker));
        }
        if u64::from(width) * u64::from(height) > max_pixels {
            return Err(Error::Frame(format!(
                "the decoder produced a {width}×{height} picture, over the limit of {max_pixels} pixels"
            )));
        }
        let (cw, ch) = chroma(width, height);
        let luma = width as usize * height as usize;
        buf.resize(luma + 2 * cw * ch, 0);
        if pipe.read_exact(&mut buf).is_err() {
            return Ok((info, End::Closed));
        }
        let (y, uv) = buf.split_at(luma);
        let (u, v) = uv.split_at(cw * ch);
        info.width = width;
        info.height = height;
        info.frames += 1;
        let picture = Picture {
            pts: Duration::from_nanos(pts),
            width,
            height,
            planes: [y, u, v],
            strides: [width as usize, cw, cw],
        };
        if on_picture(picture)? == Flow::Stop {
            return Ok((info, End::Stopped));
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn header(pts: u64, w: u32, h: u32) -> Vec<u8> {
        let mut out = pts.to_le_bytes().to_vec();
        out.extend(w.to_le_bytes());
        out.extend(h.to_le_bytes());
        out
    }

    #[test]
    fn pictures_round_trip_and_the_marker_ends_them() {
        let mut pipe = header(40_000_000, 4, 2);
        pipe.extend([1u8; 8]);
        pipe.extend([2u8; 2]);
        pipe.extend([3u8; 2]);
        pipe.extend(header(0, 0, 0));
        let mut seen = Vec::new();
        let (info, end) = read_pictures(&pipe[..], 1000, &mut |p| {
            seen.push((p.pts, p.width(), p.height(), p.planes[1].to_vec()));
            Ok(Flow::Continue)
        })
        .unwrap();
        assert_eq!(end, End::Marker);
        assert_eq!(info.frames, 1);
        assert_eq!(seen, [(Duration::from_millis(40), 4, 2, vec![2u8; 2])]);
    }

    #[test]
    fn a_picture_over_the_limit_is_refused_before_its_buffer() {
        let pipe = header(0, 100_000, 100_000);
        let e = read_pictures(&pipe[..], 1_000_000, &mut |_| Ok(Flow::Continue)).unwrap_err();
        assert!(e.to_string().contains("over the limit"), "{e}");
    }

    proptest! {
        /// Whatever a broken or subverted decoder writes, the parent reads
        /// it or stops, never panics and never allocates past the limit.
        #[test]
        fn any_pipe_bytes_are_read_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = read_pictures(&bytes[..], 4096, &mut |_| Ok(Flow::Continue));
        }
    }
}
