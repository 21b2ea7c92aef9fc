//! Near-duplicate lookup: the perceptual hashes of published frames, by
//! their H3 cell at the dedupe resolution.

use std::collections::HashMap;

use hexroad_wire::FrameId;

use crate::image_ops;

/// Near-duplicate lookup: perceptual hashes of published frames by H3 cell.
#[derive(Debug, Clone)]
pub(crate) struct DedupeIndex {
    resolution: h3o::Resolution,
    by_cell: HashMap<h3o::CellIndex, Vec<(FrameId, u64)>>,
}

impl DedupeIndex {
    pub(crate) fn new(resolution: u8) -> Self {
        Self {
            resolution: h3o::Resolution::try_from(resolution).unwrap_or(h3o::Resolution::Eleven),
            by_cell: HashMap::new(),
        }
    }

    pub(crate) fn insert(&mut self, cell: h3o::CellIndex, frame_id: FrameId, phash: u64) {
        if let Some(parent) = cell.parent(self.resolution) {
            self.by_cell
                .entry(parent)
                .or_default()
                .push((frame_id, phash));
        }
    }

    /// The closest published frame within `max_bits` in this or a neighbouring cell.
    pub(crate) fn nearest(
        &self,
        cell: h3o::CellIndex,
        phash: u64,
        max_bits: u32,
    ) -> Option<(FrameId, u32)> {
        let parent = cell.parent(self.resolution)?;
        parent
            .grid_disk::<Vec<_>>(1)
            .into_iter()
            .filter_map(|c| self.by_cell.get(&c))
            .flatten()
            .map(|(id, h)| (*id, image_ops::hamming(*h, phash)))
            .filter(|(_, d)| *d <= max_bits)
            .min_by_key(|(_, d)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_index_finds_near_hashes_next_door_only() {
        let cell = hexroad_wire::grid::cell_at(60.17, 24.94).unwrap();
        let far = hexroad_wire::grid::cell_at(60.20, 24.90).unwrap();
        let mut index = DedupeIndex::new(11);
        let a = FrameId::from_bytes([0xa; 16]);
        index.insert(cell, a, 0xffff_0000_ffff_0000);
        assert_eq!(index.nearest(cell, 0xffff_0000_ffff_0003, 8), Some((a, 2)));
        assert_eq!(index.nearest(cell, 0x0000_ffff_0000_ffff, 8), None);
        assert_eq!(index.nearest(far, 0xffff_0000_ffff_0000, 8), None);
    }
}
