//! How cells are stored (Delta has no unsigned integers), and the cell
//! ranges that cover an area, which prune files, row groups and pages of
//! tables sorted by cell.

use h3o::{CellIndex, LatLng, Resolution};

/// A cell as stored in Delta, which has no unsigned integers.
///
/// H3 indexes use 63 bits (the top bit is reserved and always 0), so the
/// signed value is the same number; the SQL session casts it back to `UInt64`.
///
/// ```
/// let cell = hexroad_wire::grid::cell_at(60.1699, 24.9384).unwrap();
/// assert_eq!(hexroad_lake::grid::cell_to_stored(cell) as u64, u64::from(cell));
/// ```
pub fn cell_to_stored(cell: CellIndex) -> i64 {
    // An H3 index never sets bit 63, so this conversion cannot wrap.
    u64::from(cell) as i64
}

/// A stored cell back as an index, `None` if the number is not a valid cell.
pub fn cell_from_stored(value: i64) -> Option<CellIndex> {
    u64::try_from(value)
        .ok()
        .and_then(|v| CellIndex::try_from(v).ok())
}

/// Areas wider than this (degrees) are not covered by ranges: a tile that
/// large reads most of the table anyway.
const WIDEST_COVERED_DEG: f64 = 5.0;

/// At most this many cells across an area per side (before their ring).
const SAMPLES_PER_SIDE: f64 = 4.0;

/// At most this many ranges: each one is a term the scan evaluates per row,
/// and a long chain of them costs more to plan and test than it prunes.
const MOST_RANGES: usize = 4;

/// The resolution-15 index ranges `[first, last]` whose cells include every
/// resolution-15 cell with a point inside `south..=north`, `west..=east`;
/// `None` for an area too wide (or crossing the antimeridian) to be worth
/// it. At most [`MOST_RANGES`] ranges, sorted and disjoint: the cells'
/// ranges joined across the smallest gaps between them.
///
/// The descendants of a cell at a fixed resolution form one contiguous
/// index range (the digits below the cell's resolution run from 0 to 6),
/// so a table sorted by cell keeps each range in neighbouring rows.
pub fn cell_ranges(south: f64, north: f64, west: f64, east: f64) -> Option<Vec<(u64, u64)>> {
    let finite = [south, north, west, east].iter().all(|v| v.is_finite());
    if !finite
        || south > north
        || west > east
        || north - south > WIDEST_COVERED_DEG
        || east - west > WIDEST_COVERED_DEG
    {
        return None;
    }
    let (height_m, width_m) = extent_m(south, north, west, east);
    let side_m = height_m.max(width_m);
    // The finest resolution whose cells are still a quarter of the area's
    // side, so a few dozen cells cover it.
    let res = Resolution::range(Resolution::Zero, Resolution::Fifteen)
        .take_while(|r| r.edge_length_m() * SAMPLES_PER_SIDE >= side_m)
        .last()
        .unwrap_or(Resolution::Zero);
    let cells = cells_touching(south, north, west, east, res);
    let mut ranges: Vec<(u64, u64)> = cells.into_iter().map(descendant_range).collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    // Join across the smallest gaps until few enough ranges remain: the
    // joined ranges hold more than the area, never less.
    while merged.len() > MOST_RANGES {
        let narrowest = (1..merged.len())
            .min_by_key(|&i| merged[i].0 - merged[i - 1].1)
            .unwrap_or(1);
        merged[narrowest - 1].1 = merged[narrowest].1;
        merged.remove(narrowest);
    }
    Some(merged)
}

/// An area's height and width in metres (the width at its middle latitude).
fn extent_m(south: f64, north: f64, west: f64, east: f64) -> (f64, f64) {
    let mid = ((south + north) / 2.0).to_radians().cos().max(0.01);
    let height_m = (north - south).max(0.0) * 111_320.0;
    (height_m, (east - west).max(0.0) * 111_320.0 * mid)
}

/// The cells at `res` touching the area `south..=north`, `west..=east`,
/// and some of their neighbours, sorted: points closer than a cell's edge
/// lie in one cell or in neighbouring ones, so the area is sampled at that
/// spacing and each sample's cell is taken with its ring.
pub fn cells_touching(
    south: f64,
    north: f64,
    west: f64,
    east: f64,
    res: Resolution,
) -> Vec<CellIndex> {
    let (height_m, width_m) = extent_m(south, north, west, east);
    let step_m = res.edge_length_m() * 0.9;
    let rows = (height_m / step_m).ceil().clamp(1.0, 4096.0) as usize;
    let cols = (width_m / step_m).ceil().clamp(1.0, 4096.0) as usize;
    let mut centres = std::collections::HashSet::new();
    let mut cells = std::collections::BTreeSet::new();
    for i in 0..=rows {
        let lat = south + (north - south) * i as f64 / rows as f64;
        for j in 0..=cols {
            let lon = west + (east - west) * j as f64 / cols as f64;
            let Ok(point) = LatLng::new(lat.clamp(-90.0, 90.0), lon) else {
                continue;
            };
            let cell = point.to_cell(res);
            if centres.insert(cell) {
                cells.extend(cell.grid_disk::<Vec<_>>(1));
            }
        }
    }
    cells.into_iter().collect()
}

/// The first and last resolution-15 index below `cell`: the cell's own
/// digits, then every finer digit 0 (first) or 6 (last).
fn descendant_range(cell: CellIndex) -> (u64, u64) {
    const RES_SHIFT: u32 = 52;
    const RES_MASK: u64 = 0xF << RES_SHIFT;
    let index = u64::from(cell);
    let res = u32::from(u8::from(cell.resolution()));
    // Digits res+1..=15 sit in the low 3 * (15 - res) bits.
    let below = 3 * (15 - res);
    let digits = if below == 0 { 0 } else { (1u64 << below) - 1 };
    let base = (index & !RES_MASK & !digits) | (15u64 << RES_SHIFT);
    // 0b110 repeated: every finer digit 6.
    let sixes = (0..15 - res).fold(0u64, |acc, i| acc | (6u64 << (3 * i)));
    (base, base | sixes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cells_descendants_lie_in_its_range() {
        let cell = hexroad_wire::grid::cell_at(60.17, 24.94).unwrap();
        for res in [Resolution::Five, Resolution::Nine, Resolution::Twelve] {
            let parent = cell.parent(res).unwrap();
            let (lo, hi) = descendant_range(parent);
            let first = parent.children(Resolution::Fifteen).next().unwrap();
            let last = parent.children(Resolution::Fifteen).last().unwrap();
            assert_eq!((lo, hi), (u64::from(first), u64::from(last)));
        }
        let (lo, hi) = descendant_range(cell);
        assert_eq!((lo, hi), (u64::from(cell), u64::from(cell)));
    }

    proptest::proptest! {
        /// Every point of the area is in a cell the ranges hold.
        #[test]
        fn the_ranges_cover_every_point_of_the_area(
            south in -80.0f64..80.0,
            west in -179.0f64..170.0,
            height in 1e-5f64..0.5,
            width in 1e-5f64..0.5,
            u in 0.0f64..=1.0,
            v in 0.0f64..=1.0,
        ) {
            let (north, east) = (south + height, west + width);
            let ranges = cell_ranges(south, north, west, east).unwrap();
            proptest::prop_assert!(ranges.len() <= MOST_RANGES, "{} ranges", ranges.len());
            let (lat, lon) = (south + height * u, west + width * v);
            let cell = u64::from(hexroad_wire::grid::cell_at(lat, lon).unwrap());
            proptest::prop_assert!(
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&cell)),
                "({lat}, {lon}) in no range"
            );
        }
    }

    #[test]
    fn wide_or_odd_areas_are_not_covered() {
        assert_eq!(cell_ranges(0.0, 10.0, 0.0, 1.0), None);
        assert_eq!(cell_ranges(1.0, 0.0, 0.0, 1.0), None);
        assert_eq!(cell_ranges(f64::NAN, 1.0, 0.0, 1.0), None);
    }

    #[test]
    fn stored_cells_are_positive_and_round_trip() {
        let cell = hexroad_wire::grid::cell_at(-89.9, 179.9).unwrap();
        assert!(cell_to_stored(cell) > 0);
        assert_eq!(cell_from_stored(cell_to_stored(cell)), Some(cell));
        assert_eq!(cell_from_stored(-1), None);
        assert_eq!(cell_from_stored(7), None);
    }
}
