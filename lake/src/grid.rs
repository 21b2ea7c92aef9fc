//! How cells are stored: Delta has no unsigned integers.

use h3o::CellIndex;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_cells_are_positive_and_round_trip() {
        let cell = hexroad_wire::grid::cell_at(-89.9, 179.9).unwrap();
        assert!(cell_to_stored(cell) > 0);
        assert_eq!(cell_from_stored(cell_to_stored(cell)), Some(cell));
        assert_eq!(cell_from_stored(-1), None);
        assert_eq!(cell_from_stored(7), None);
    }
}
