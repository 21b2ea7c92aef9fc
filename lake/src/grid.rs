//! H3 helpers: every point is kept at resolution 15 and coarser cells derive from it.

use h3o::{CellIndex, LatLng, Resolution};

use crate::{Error, Result};

/// The resolution every GNSS point and frame is stored at (about 0.5 m edges).
pub const STORED_RESOLUTION: Resolution = Resolution::Fifteen;

/// The resolution-15 cell containing a WGS84 coordinate.
///
/// ```
/// let cell = hexroad_lake::grid::cell_at(60.1699, 24.9384).unwrap();
/// assert_eq!(cell.resolution(), h3o::Resolution::Fifteen);
/// ```
pub fn cell_at(lat: f64, lon: f64) -> Result<CellIndex> {
    LatLng::new(lat, lon)
        .map(|ll| ll.to_cell(STORED_RESOLUTION))
        .map_err(|e| Error::Grid {
            lat,
            lon,
            reason: e.to_string(),
        })
}

/// A cell as stored in Delta, which has no unsigned integers.
///
/// H3 indexes use 63 bits (the top bit is reserved and always 0), so the
/// signed value is the same number; the SQL session casts it back to `UInt64`.
pub fn cell_to_stored(cell: CellIndex) -> i64 {
    // An H3 index never sets bit 63, so this conversion cannot wrap.
    u64::from(cell) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from the H3 C library (4.x, through the `h3`
    /// Python bindings): `latLngToCell` at resolutions 15 and 9.
    #[test]
    fn matches_the_c_reference() {
        let cell = cell_at(37.3615593, -122.0553238).unwrap();
        assert_eq!(u64::from(cell), 0x08f2_8347_0d92_1c65);
        let parent = cell.parent(Resolution::Nine).unwrap();
        assert_eq!(u64::from(parent), 0x0892_8347_0d93_ffff);
        let helsinki = cell_at(60.1699, 24.9384).unwrap();
        assert_eq!(u64::from(helsinki), 0x08f1_126d_338d_c98e);
    }

    #[test]
    fn stored_cells_are_positive() {
        let cell = cell_at(-89.9, 179.9).unwrap();
        assert!(cell_to_stored(cell) > 0);
    }

    #[test]
    fn refuses_non_finite() {
        assert!(cell_at(f64::NAN, 0.0).is_err());
    }
}
