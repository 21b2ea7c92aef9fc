//! Frame bundles: a tar of JPEG frames named `<unix_ms>.jpg`.

use std::path::Path;

use chrono::DateTime;

use crate::job::Consider;
use crate::video::Flow;
use crate::{Error, Result};

/// The JPEG frames of a tar bundle, named `<unix_ms>.jpg`, in time order.
pub(crate) fn frames(path: &Path, max_pixels: u64, consider: &mut Consider<'_>) -> Result<()> {
    use std::io::Read;
    let bad = |reason: String| Error::Input {
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut archive = tar::Archive::new(file);
    let mut frames: Vec<(i64, Vec<u8>)> = Vec::new();
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| bad(format!("corrupt tar archive: {e}")))?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let base = name.rsplit('/').next().unwrap_or(&name).to_owned();
        if let Some(ms) = base
            .strip_suffix(".jpg")
            .or_else(|| base.strip_suffix(".jpeg"))
            .and_then(|s| s.parse::<i64>().ok())
        {
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .map_err(|e| bad(format!("{name}: truncated: {e}")))?;
            frames.push((ms, data));
        }
    }
    frames.sort_by_key(|(ms, _)| *ms);
    for (i, (ms, data)) in frames.into_iter().enumerate() {
        let ts = DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| bad(format!("{ms}.jpg: bad time")))?;
        let mut decode =
            || decode_within(&data, max_pixels).map_err(|e| bad(format!("{ms}.jpg: {e}")));
        if consider(i as u64, ts, &mut decode)? == Flow::Stop {
            break;
        }
    }
    Ok(())
}

/// Decodes a JPEG, refusing from its header one whose picture exceeds
/// `max_pixels` before any pixel buffer is allocated (ingest checks too;
/// this holds for uploads stored before a limit was lowered).
fn decode_within(data: &[u8], max_pixels: u64) -> std::result::Result<image::RgbImage, String> {
    if let Ok((w, h)) = hexroad_wire::jpeg::dimensions(data)
        && u64::from(w) * u64::from(h) > max_pixels
    {
        return Err(format!("{w}×{h} exceeds the limit of {max_pixels} pixels"));
    }
    let open = || {
        image::ImageReader::new(std::io::Cursor::new(data))
            .with_guessed_format()
            .map_err(|e| e.to_string())
    };
    let mut reader = open()?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(4));
    reader.limits(limits);
    reader
        .decode()
        .map(|d| d.to_rgb8())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14, resolution bomb: a 23000×23000 JPEG header is refused
    /// before decoding would allocate 1.5 GB for its pixels.
    #[test]
    fn a_resolution_bomb_is_refused_before_decoding() {
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08];
        j.extend(23000u16.to_be_bytes());
        j.extend(23000u16.to_be_bytes());
        j.extend([0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01]);
        j.extend([0xFF, 0xD9]);
        let e = decode_within(&j, 7680 * 4320).unwrap_err();
        assert!(e.contains("23000×23000"), "{e}");
    }
}
