//! Frame bundles: a tar of JPEG frames named `<unix_ms>.jpg`.

use std::path::Path;

use chrono::DateTime;

use crate::job::Consider;
use crate::video::Flow;
use crate::{Error, Result};

/// The JPEG frames of a tar bundle, named `<unix_ms>.jpg`, in time order.
pub(crate) fn frames(path: &Path, consider: &mut Consider<'_>) -> Result<()> {
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
        let mut decode = || {
            image::load_from_memory(&data)
                .map(|d| d.to_rgb8())
                .map_err(|e| bad(format!("{ms}.jpg: {e}")))
        };
        if consider(i as u64, ts, &mut decode)? == Flow::Stop {
            break;
        }
    }
    Ok(())
}
