//! Web Mercator tile addressing (the XYZ scheme MapLibre and PMTiles use),
//! projection into a tile's coordinates, and clipping to a buffered tile.

/// Web Mercator's latitude limit.
pub const MAX_LAT: f64 = 85.051_128_779_806_59;

/// One tile: zoom, column, row (row 0 at the north).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    pub z: u8,
    pub x: u32,
    pub y: u32,
}

impl TileId {
    /// `None` when x or y is off the grid for z, or z is beyond 24.
    pub fn new(z: u8, x: u32, y: u32) -> Option<Self> {
        if z > 24 {
            return None;
        }
        let n = 1u32 << z;
        (x < n && y < n).then_some(Self { z, x, y })
    }

    /// West, south, east, north in degrees.
    pub fn bounds(self) -> [f64; 4] {
        let n = f64::from(1u32 << self.z);
        let lon = |x: f64| x / n * 360.0 - 180.0;
        let lat = |y: f64| {
            let m = std::f64::consts::PI * (1.0 - 2.0 * y / n);
            m.sinh().atan().to_degrees()
        };
        [
            lon(f64::from(self.x)),
            lat(f64::from(self.y + 1)),
            lon(f64::from(self.x + 1)),
            lat(f64::from(self.y)),
        ]
    }

    /// The tile containing a point at zoom z.
    pub fn containing(lat: f64, lon: f64, z: u8) -> Self {
        let n = f64::from(1u32 << z);
        let (x, y) = world(lat, lon);
        let clamp = |v: f64| (v * n).floor().clamp(0.0, n - 1.0) as u32;
        Self {
            z,
            x: clamp(x),
            y: clamp(y),
        }
    }

    /// A point's position in this tile's coordinates (0..extent, y down),
    /// unrounded.
    pub fn project(self, lat: f64, lon: f64, extent: u32) -> [f64; 2] {
        let n = f64::from(1u32 << self.z);
        let (x, y) = world(lat, lon);
        let e = f64::from(extent);
        [
            (x * n - f64::from(self.x)) * e,
            (y * n - f64::from(self.y)) * e,
        ]
    }
}

/// A position on the whole Web Mercator square, 0..1 each way, y down.
pub fn world(lat: f64, lon: f64) -> (f64, f64) {
    let lat = lat.clamp(-MAX_LAT, MAX_LAT).to_radians();
    let x = (lon + 180.0) / 360.0;
    let y = (1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0;
    (x, y)
}

/// Clips a polygon ring (Sutherland-Hodgman) to the square
/// `-buffer..extent+buffer`; the result may be empty.
pub fn clip_ring(ring: &[[f64; 2]], lo: f64, hi: f64) -> Vec<[f64; 2]> {
    let mut out = ring.to_vec();
    // Each edge: (axis, keep when >= lo (true) or <= hi (false), bound).
    for (axis, lower, bound) in [(0, true, lo), (0, false, hi), (1, true, lo), (1, false, hi)] {
        if out.is_empty() {
            break;
        }
        let inside = |p: &[f64; 2]| {
            if lower {
                p[axis] >= bound
            } else {
                p[axis] <= bound
            }
        };
        let input = std::mem::take(&mut out);
        for i in 0..input.len() {
            let cur = input[i];
            let prev = input[(i + input.len() - 1) % input.len()];
            let cross = |a: [f64; 2], b: [f64; 2]| {
                let t = (bound - a[axis]) / (b[axis] - a[axis]);
                [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])]
            };
            match (inside(&prev), inside(&cur)) {
                (true, true) => out.push(cur),
                (true, false) => out.push(cross(prev, cur)),
                (false, true) => {
                    out.push(cross(prev, cur));
                    out.push(cur);
                }
                (false, false) => {}
            }
        }
    }
    out
}

/// Clips a line to the square `lo..hi`, splitting it where it leaves and
/// re-enters (Liang-Barsky on each segment).
pub fn clip_line(line: &[[f64; 2]], lo: f64, hi: f64) -> Vec<Vec<[f64; 2]>> {
    let mut parts: Vec<Vec<[f64; 2]>> = Vec::new();
    let mut current: Vec<[f64; 2]> = Vec::new();
    for w in line.windows(2) {
        let (a, b) = (w[0], w[1]);
        match clip_segment(a, b, lo, hi) {
            Some((p, q)) => {
                if current.last() != Some(&p) {
                    if !current.is_empty() {
                        parts.push(std::mem::take(&mut current));
                    }
                    current.push(p);
                }
                current.push(q);
                if q != b {
                    parts.push(std::mem::take(&mut current));
                }
            }
            None => {
                if !current.is_empty() {
                    parts.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts.retain(|p| p.len() >= 2);
    parts
}

fn clip_segment(a: [f64; 2], b: [f64; 2], lo: f64, hi: f64) -> Option<([f64; 2], [f64; 2])> {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for (p, q) in [
        (-dx, a[0] - lo),
        (dx, hi - a[0]),
        (-dy, a[1] - lo),
        (dy, hi - a[1]),
    ] {
        if p == 0.0 {
            if q < 0.0 {
                return None;
            }
        } else {
            let r = q / p;
            if p < 0.0 {
                t0 = t0.max(r);
            } else {
                t1 = t1.min(r);
            }
            if t0 > t1 {
                return None;
            }
        }
    }
    let at = |t: f64| [a[0] + t * dx, a[1] + t * dy];
    Some((
        if t0 > 0.0 { at(t0) } else { a },
        if t1 < 1.0 { at(t1) } else { b },
    ))
}

/// Douglas-Peucker: drops points closer than `tolerance` to the line kept.
pub fn simplify(line: &[[f64; 2]], tolerance: f64) -> Vec<[f64; 2]> {
    if line.len() < 3 {
        return line.to_vec();
    }
    let mut keep = vec![false; line.len()];
    keep[0] = true;
    keep[line.len() - 1] = true;
    let mut stack = vec![(0, line.len() - 1)];
    while let Some((i, j)) = stack.pop() {
        let (a, b) = (line[i], line[j]);
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len = (dx * dx + dy * dy).sqrt();
        let mut worst = (0.0, i);
        for (k, p) in line.iter().enumerate().take(j).skip(i + 1) {
            let d = if len == 0.0 {
                ((p[0] - a[0]).powi(2) + (p[1] - a[1]).powi(2)).sqrt()
            } else {
                ((p[0] - a[0]) * dy - (p[1] - a[1]) * dx).abs() / len
            };
            if d > worst.0 {
                worst = (d, k);
            }
        }
        if worst.0 > tolerance {
            keep[worst.1] = true;
            stack.push((i, worst.1));
            stack.push((worst.1, j));
        }
    }
    line.iter()
        .zip(keep)
        .filter_map(|(p, k)| k.then_some(*p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_lands_in_the_tile_that_contains_it() {
        let t = TileId::containing(60.17, 24.94, 15);
        let [w, s, e, n] = t.bounds();
        assert!(w <= 24.94 && 24.94 < e && s <= 60.17 && 60.17 < n);
        let p = t.project(60.17, 24.94, 4096);
        assert!((0.0..4096.0).contains(&p[0]) && (0.0..4096.0).contains(&p[1]));
        assert_eq!(TileId::containing(0.0, 0.0, 1), TileId { z: 1, x: 1, y: 1 });
    }

    #[test]
    fn off_grid_tiles_are_refused() {
        assert!(TileId::new(2, 4, 0).is_none());
        assert!(TileId::new(25, 0, 0).is_none());
        assert!(TileId::new(0, 0, 0).is_some());
    }

    #[test]
    fn clipping_a_square_keeps_the_overlap() {
        let ring = [[-10.0, -10.0], [10.0, -10.0], [10.0, 10.0], [-10.0, 10.0]];
        let clipped = clip_ring(&ring, 0.0, 100.0);
        let xs: Vec<f64> = clipped.iter().map(|p| p[0]).collect();
        assert!(xs.iter().all(|&x| (0.0..=10.0).contains(&x)));
        assert!(clip_ring(&ring, 50.0, 100.0).is_empty());
    }

    #[test]
    fn a_line_leaving_and_returning_is_split() {
        let line = [[10.0, 10.0], [200.0, 10.0], [200.0, 50.0], [10.0, 50.0]];
        let parts = clip_line(&line, 0.0, 100.0);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], vec![[10.0, 10.0], [100.0, 10.0]]);
        assert_eq!(parts[1], vec![[100.0, 50.0], [10.0, 50.0]]);
    }

    #[test]
    fn simplify_drops_the_nearly_straight() {
        let line = [[0.0, 0.0], [5.0, 0.1], [10.0, 0.0], [10.0, 10.0]];
        assert_eq!(
            simplify(&line, 1.0),
            vec![[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]]
        );
    }
}
