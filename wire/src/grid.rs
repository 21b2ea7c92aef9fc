//! Distances on the sphere and the H3 grid: every point is kept at
//! resolution 15 and coarser cells derive from it.

use h3o::{CellIndex, LatLng, Resolution};

/// A coordinate that cannot be placed on the H3 grid (not finite, or off
/// the globe).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("coordinate ({lat}, {lon}) is not on the grid: {reason}")]
pub struct GridError {
    pub lat: f64,
    pub lon: f64,
    pub reason: String,
}

/// The resolution every GNSS point and frame is stored at (about 0.5 m edges).
pub const STORED_RESOLUTION: Resolution = Resolution::Fifteen;

/// Mean Earth radius (IUGG), the sphere every distance in hexroad is taken on.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Great-circle distance in metres between two `(lat, lon)` in degrees.
///
/// ```
/// let d = hexroad_wire::grid::haversine_m((60.0, 25.0), (61.0, 25.0));
/// assert!((d - 111_195.0).abs() < 1.0);
/// ```
pub fn haversine_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, la2) = (a.0.to_radians(), b.0.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.1 - a.1).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    // Rounding can push h a hair above 1 for antipodal points.
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// Initial bearing from `a` to `b`, degrees clockwise from north.
///
/// ```
/// let east = hexroad_wire::grid::bearing_deg((60.0, 25.0), (60.0, 25.1));
/// assert!((east - 90.0).abs() < 1.0);
/// ```
pub fn bearing_deg(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, la2) = (a.0.to_radians(), b.0.to_radians());
    let dlon = (b.1 - a.1).to_radians();
    let y = dlon.sin() * la2.cos();
    let x = la1.cos() * la2.sin() - la1.sin() * la2.cos() * dlon.cos();
    (y.atan2(x).to_degrees() + 360.0) % 360.0
}

/// The resolution-15 cell containing a WGS84 coordinate.
///
/// ```
/// let cell = hexroad_wire::grid::cell_at(60.1699, 24.9384).unwrap();
/// assert_eq!(cell.resolution(), h3o::Resolution::Fifteen);
/// ```
pub fn cell_at(lat: f64, lon: f64) -> Result<CellIndex, GridError> {
    LatLng::new(lat, lon)
        .map(|ll| ll.to_cell(STORED_RESOLUTION))
        .map_err(|e| GridError {
            lat,
            lon,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearing_points_the_right_way() {
        let north = bearing_deg((60.0, 25.0), (60.1, 25.0));
        let east = bearing_deg((60.0, 25.0), (60.0, 25.1));
        assert!(!(1.0..=359.0).contains(&north), "{north}");
        assert!((east - 90.0).abs() < 1.0, "{east}");
    }

    #[test]
    fn antipodes_are_half_the_circumference() {
        let d = haversine_m((10.0, 20.0), (-10.0, -160.0));
        assert!(
            (d - std::f64::consts::PI * EARTH_RADIUS_M).abs() < 1.0,
            "{d}"
        );
    }

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
    fn refuses_non_finite() {
        assert!(cell_at(f64::NAN, 0.0).is_err());
    }
}
