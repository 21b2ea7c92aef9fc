//! PMTiles v3 archives: one file holding every tile, addressed by a Hilbert
//! curve tile id through gzipped directories, for static hosting.
//!
//! Identical tiles are stored once; consecutive identical tiles share one
//! directory entry (its run length).

use std::collections::HashMap;

use crate::gzip;
use crate::mercator::TileId;
use crate::mvt::varint;

const HEADER_LEN: usize = 127;
/// The header and root directory must fit in the first 16 KiB.
const ROOT_MAX: usize = 16_384 - HEADER_LEN;

/// The Hilbert-curve tile id: tiles of lower zooms first, then along the
/// curve within a zoom.
pub fn tile_id(t: TileId) -> u64 {
    let base: u64 = (0..t.z).map(|i| 1u64 << (2 * u32::from(i))).sum();
    let (mut x, mut y) = (u64::from(t.x), u64::from(t.y));
    let mut d = 0u64;
    let mut s = (1u64 << t.z) / 2;
    while s > 0 {
        let rx = u64::from(x & s > 0);
        let ry = u64::from(y & s > 0);
        d += s * s * ((3 * rx) ^ ry);
        // Rotate the quadrant; the bits above s no longer matter.
        if ry == 0 {
            if rx == 1 {
                x = (s - 1).wrapping_sub(x);
                y = (s - 1).wrapping_sub(y);
            }
            std::mem::swap(&mut x, &mut y);
        }
        s /= 2;
    }
    base + d
}

/// Where an archive's map is and what it holds, for the header.
#[derive(Debug, Clone)]
pub struct Bounds {
    pub min_zoom: u8,
    pub max_zoom: u8,
    /// West, south, east, north in degrees.
    pub bbox: [f64; 4],
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    tile_id: u64,
    offset: u64,
    length: u32,
    run_length: u32,
}

/// Collects tiles (gzipped MVT) in any order and writes the archive.
#[derive(Default)]
pub struct Writer {
    tiles: Vec<(u64, Vec<u8>)>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one tile's gzipped bytes; empty tiles need not be added.
    pub fn add(&mut self, tile: TileId, gzipped: Vec<u8>) {
        self.tiles.push((tile_id(tile), gzipped));
    }

    pub fn len(&self) -> usize {
        self.tiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }

    /// The whole archive; `metadata` is the JSON metadata object.
    pub fn finish(mut self, bounds: &Bounds, metadata: &serde_json::Value) -> Vec<u8> {
        self.tiles.sort_by_key(|(id, _)| *id);
        self.tiles.dedup_by_key(|(id, _)| *id);
        let mut data = Vec::new();
        let mut stored: HashMap<Vec<u8>, (u64, u32)> = HashMap::new();
        let mut entries: Vec<Entry> = Vec::new();
        for (id, bytes) in &self.tiles {
            let (offset, length) = match stored.get(bytes) {
                Some(&at) => at,
                None => {
                    let at = (data.len() as u64, bytes.len() as u32);
                    data.extend_from_slice(bytes);
                    stored.insert(bytes.clone(), at);
                    at
                }
            };
            if let Some(last) = entries.last_mut()
                && last.offset == offset
                && last.length == length
                && last.tile_id + u64::from(last.run_length) == *id
            {
                last.run_length += 1;
                continue;
            }
            entries.push(Entry {
                tile_id: *id,
                offset,
                length,
                run_length: 1,
            });
        }
        let contents = stored.len() as u64;
        let (root, leaves) = directories(&entries);
        let metadata = gzip(metadata.to_string().as_bytes());

        let root_offset = HEADER_LEN as u64;
        let metadata_offset = root_offset + root.len() as u64;
        let leaves_offset = metadata_offset + metadata.len() as u64;
        let data_offset = leaves_offset + leaves.len() as u64;

        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(b"PMTiles");
        h.push(3);
        for v in [
            root_offset,
            root.len() as u64,
            metadata_offset,
            metadata.len() as u64,
            leaves_offset,
            leaves.len() as u64,
            data_offset,
            data.len() as u64,
            self.tiles.len() as u64,
            entries.len() as u64,
            contents,
        ] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h.push(1); // clustered: tile data in tile id order
        h.push(2); // internal compression: gzip
        h.push(2); // tile compression: gzip
        h.push(1); // tile type: MVT
        h.push(bounds.min_zoom);
        h.push(bounds.max_zoom);
        let e7 = |v: f64| ((v * 1e7).round() as i32).to_le_bytes();
        let [w, s, e, n] = bounds.bbox;
        h.extend_from_slice(&e7(w));
        h.extend_from_slice(&e7(s));
        h.extend_from_slice(&e7(e));
        h.extend_from_slice(&e7(n));
        h.push(bounds.min_zoom.max(bounds.max_zoom.saturating_sub(2)));
        h.extend_from_slice(&e7((w + e) / 2.0));
        h.extend_from_slice(&e7((s + n) / 2.0));
        debug_assert_eq!(h.len(), HEADER_LEN);

        let mut out = h;
        out.extend_from_slice(&root);
        out.extend_from_slice(&metadata);
        out.extend_from_slice(&leaves);
        out.extend_from_slice(&data);
        out
    }
}

/// The root directory and the leaf directories, gzipped: all entries in
/// the root if they fit, else leaves of a size that makes the root fit.
fn directories(entries: &[Entry]) -> (Vec<u8>, Vec<u8>) {
    let root = gzip(&serialize(entries));
    if root.len() <= ROOT_MAX {
        return (root, Vec::new());
    }
    let mut leaf_size = 4096;
    loop {
        let mut leaves = Vec::new();
        let mut root_entries = Vec::new();
        for chunk in entries.chunks(leaf_size) {
            let leaf = gzip(&serialize(chunk));
            root_entries.push(Entry {
                tile_id: chunk[0].tile_id,
                offset: leaves.len() as u64,
                length: leaf.len() as u32,
                run_length: 0,
            });
            leaves.extend_from_slice(&leaf);
        }
        let root = gzip(&serialize(&root_entries));
        if root.len() <= ROOT_MAX {
            return (root, leaves);
        }
        leaf_size *= 2;
    }
}

fn serialize(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(&mut out, entries.len() as u64);
    let mut last = 0;
    for e in entries {
        varint(&mut out, e.tile_id - last);
        last = e.tile_id;
    }
    for e in entries {
        varint(&mut out, u64::from(e.run_length));
    }
    for e in entries {
        varint(&mut out, u64::from(e.length));
    }
    for (i, e) in entries.iter().enumerate() {
        let follows = i > 0 && {
            let p = entries[i - 1];
            e.offset == p.offset + u64::from(p.length)
        };
        varint(&mut out, if follows { 0 } else { e.offset + 1 });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_ids_follow_the_spec() {
        // From the PMTiles v3 specification's examples.
        let id = |z, x, y| tile_id(TileId { z, x, y });
        assert_eq!(id(0, 0, 0), 0);
        assert_eq!(id(1, 0, 0), 1);
        assert_eq!(id(1, 0, 1), 2);
        assert_eq!(id(1, 1, 1), 3);
        assert_eq!(id(1, 1, 0), 4);
        assert_eq!(id(2, 0, 0), 5);
        assert_eq!(id(12, 3423, 1763), 19_078_479);
    }
}
