//! Mapbox Vector Tile 2.1 encoding: layers of points, lines and polygons in
//! tile coordinates, written as the spec's protobuf by hand (the message is
//! five fields deep; a code generator would cost more than it saves).

use std::collections::HashMap;

/// A property value, as MVT's `Value` message carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Double(f64),
    Int(i64),
    Uint(u64),
    Bool(bool),
}

impl Value {
    /// A key for de-duplicating values within a layer (doubles by bits).
    fn key(&self) -> (u8, String) {
        match self {
            Value::String(s) => (0, s.clone()),
            Value::Double(d) => (1, d.to_bits().to_string()),
            Value::Int(i) => (2, i.to_string()),
            Value::Uint(u) => (3, u.to_string()),
            Value::Bool(b) => (4, b.to_string()),
        }
    }
}

/// A feature's shape in tile coordinates (0..extent, y down), already clipped.
#[derive(Debug, Clone, PartialEq)]
pub enum Geometry {
    Points(Vec<[i32; 2]>),
    Lines(Vec<Vec<[i32; 2]>>),
    /// Rings, each open (first point not repeated); exterior rings first.
    Polygon(Vec<Vec<[i32; 2]>>),
}

/// One layer being built.
#[derive(Debug)]
pub struct Layer {
    name: String,
    extent: u32,
    keys: Vec<String>,
    key_index: HashMap<String, u32>,
    values: Vec<Value>,
    value_index: HashMap<(u8, String), u32>,
    features: Vec<Vec<u8>>,
}

impl Layer {
    pub fn new(name: &str, extent: u32) -> Self {
        Self {
            name: name.to_owned(),
            extent,
            keys: Vec::new(),
            key_index: HashMap::new(),
            values: Vec::new(),
            value_index: HashMap::new(),
            features: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    pub fn len(&self) -> usize {
        self.features.len()
    }

    /// Adds a feature; one whose geometry is empty after clipping is skipped.
    pub fn add(&mut self, id: Option<u64>, geometry: &Geometry, properties: &[(&str, Value)]) {
        let commands = encode_geometry(geometry);
        if commands.is_empty() {
            return;
        }
        let mut tags = Vec::with_capacity(properties.len() * 2);
        for (k, v) in properties {
            let ki = match self.key_index.get(*k) {
                Some(&i) => i,
                None => {
                    let i = self.keys.len() as u32;
                    self.keys.push((*k).to_owned());
                    self.key_index.insert((*k).to_owned(), i);
                    i
                }
            };
            let vkey = v.key();
            let vi = match self.value_index.get(&vkey) {
                Some(&i) => i,
                None => {
                    let i = self.values.len() as u32;
                    self.values.push(v.clone());
                    self.value_index.insert(vkey, i);
                    i
                }
            };
            tags.push(ki);
            tags.push(vi);
        }
        let mut f = Vec::new();
        if let Some(id) = id {
            varint_field(&mut f, 1, id);
        }
        packed(&mut f, 2, &tags);
        let kind = match geometry {
            Geometry::Points(_) => 1,
            Geometry::Lines(_) => 2,
            Geometry::Polygon(_) => 3,
        };
        varint_field(&mut f, 3, kind);
        packed(&mut f, 4, &commands);
        self.features.push(f);
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let mut l = Vec::new();
        varint_field(&mut l, 15, 2);
        bytes_field(&mut l, 1, self.name.as_bytes());
        for f in &self.features {
            bytes_field(&mut l, 2, f);
        }
        for k in &self.keys {
            bytes_field(&mut l, 3, k.as_bytes());
        }
        for v in &self.values {
            let mut m = Vec::new();
            match v {
                Value::String(s) => bytes_field(&mut m, 1, s.as_bytes()),
                Value::Double(d) => {
                    key(&mut m, 3, 1);
                    m.extend_from_slice(&d.to_le_bytes());
                }
                Value::Int(i) => varint_field(&mut m, 4, *i as u64),
                Value::Uint(u) => varint_field(&mut m, 5, *u),
                Value::Bool(b) => varint_field(&mut m, 7, u64::from(*b)),
            }
            bytes_field(&mut l, 4, &m);
        }
        varint_field(&mut l, 5, u64::from(self.extent));
        bytes_field(out, 3, &l);
    }
}

/// The tile's bytes; empty layers are left out.
pub fn encode(layers: &[Layer]) -> Vec<u8> {
    let mut out = Vec::new();
    for layer in layers.iter().filter(|l| !l.is_empty()) {
        layer.encode(&mut out);
    }
    out
}

/// A protobuf base-128 varint (PMTiles directories use the same).
pub(crate) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    key(out, field, 0);
    varint(out, v);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn packed(out: &mut Vec<u8>, field: u32, values: &[u32]) {
    let mut body = Vec::with_capacity(values.len() * 2);
    for &v in values {
        varint(&mut body, u64::from(v));
    }
    bytes_field(out, field, &body);
}

fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

fn command(id: u32, count: usize) -> u32 {
    (id & 7) | ((count as u32) << 3)
}

/// Twice the signed area in tile coordinates (y down): positive is clockwise
/// on screen, which the spec requires of exterior rings.
pub fn ring_area2(ring: &[[i32; 2]]) -> i64 {
    let n = ring.len();
    (0..n)
        .map(|i| {
            let (a, b) = (ring[i], ring[(i + 1) % n]);
            i64::from(a[0]) * i64::from(b[1]) - i64::from(b[0]) * i64::from(a[1])
        })
        .sum()
}

fn encode_geometry(geometry: &Geometry) -> Vec<u32> {
    let mut out = Vec::new();
    let mut cursor = [0i32, 0i32];
    let push = |out: &mut Vec<u32>, p: [i32; 2], cursor: &mut [i32; 2]| {
        out.push(zigzag(p[0] - cursor[0]));
        out.push(zigzag(p[1] - cursor[1]));
        *cursor = p;
    };
    match geometry {
        Geometry::Points(points) => {
            if points.is_empty() {
                return out;
            }
            out.push(command(1, points.len()));
            for &p in points {
                push(&mut out, p, &mut cursor);
            }
        }
        Geometry::Lines(lines) => {
            for line in lines {
                let line = dedup(line);
                if line.len() < 2 {
                    continue;
                }
                out.push(command(1, 1));
                push(&mut out, line[0], &mut cursor);
                out.push(command(2, line.len() - 1));
                for &p in &line[1..] {
                    push(&mut out, p, &mut cursor);
                }
            }
        }
        Geometry::Polygon(rings) => {
            for (i, ring) in rings.iter().enumerate() {
                let mut ring = dedup(ring);
                if ring.len() > 1 && ring.first() == ring.last() {
                    ring.pop();
                }
                if ring.len() < 3 {
                    continue;
                }
                let area = ring_area2(&ring);
                if area == 0 {
                    continue;
                }
                // Exterior (the first ring) clockwise, holes anticlockwise.
                if (i == 0) != (area > 0) {
                    ring.reverse();
                }
                out.push(command(1, 1));
                push(&mut out, ring[0], &mut cursor);
                out.push(command(2, ring.len() - 1));
                for &p in &ring[1..] {
                    push(&mut out, p, &mut cursor);
                }
                out.push(command(7, 1));
            }
        }
    }
    out
}

/// Drops consecutive repeats (after rounding to the grid they are common).
fn dedup(points: &[[i32; 2]]) -> Vec<[i32; 2]> {
    let mut out: Vec<[i32; 2]> = Vec::with_capacity(points.len());
    for &p in points {
        if out.last() != Some(&p) {
            out.push(p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_matches_the_spec() {
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(zigzag(-2), 3);
    }

    #[test]
    fn the_specs_example_point_encodes_as_in_the_spec() {
        // MVT 2.1, 4.3.5.1: a point at (25, 17) is [9, 50, 34].
        assert_eq!(
            encode_geometry(&Geometry::Points(vec![[25, 17]])),
            vec![9, 50, 34]
        );
        // 4.3.5.3: a linestring (2,2) (2,10) (10,10).
        assert_eq!(
            encode_geometry(&Geometry::Lines(vec![vec![[2, 2], [2, 10], [10, 10]]])),
            vec![9, 4, 4, 18, 0, 16, 16, 0]
        );
        // 4.3.5.5: a polygon (3,6) (8,12) (20,34), closed.
        assert_eq!(
            encode_geometry(&Geometry::Polygon(vec![vec![[3, 6], [8, 12], [20, 34]]])),
            vec![9, 6, 12, 18, 10, 12, 24, 44, 15]
        );
    }

    #[test]
    fn an_anticlockwise_exterior_ring_is_turned_round() {
        let cw = vec![[3, 6], [8, 12], [20, 34]];
        let mut ccw = cw.clone();
        ccw.reverse();
        assert!(ring_area2(&cw) > 0);
        let a = encode_geometry(&Geometry::Polygon(vec![ccw]));
        assert_eq!(a.len(), 9);
        assert_eq!(*a.last().unwrap(), 15);
    }
}
