//! The drivable road network of an OSM extract, as a directed graph.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use hexroad_wire::grid::haversine_m;
use osmpbf::{Element, ElementReader};

use crate::SimError;

/// One directed road segment between two OSM nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Edge {
    pub to: usize,
    pub length_m: f64,
    /// The legal (or usual) speed on this road, m/s.
    pub speed_mps: f64,
}

/// Drivable roads: node positions, outgoing edges, and where signals stand.
#[derive(Debug, Clone)]
pub struct RoadGraph {
    pub positions: Vec<(f64, f64)>,
    pub edges: Vec<Vec<Edge>>,
    /// Nodes with `highway=traffic_signals`.
    pub signals: HashSet<usize>,
    /// Nodes where more than two road ends meet.
    pub junctions: HashSet<usize>,
}

/// Default speeds by `highway=*` (km/h), used when a way has no `maxspeed`.
fn default_kmh(highway: &str) -> Option<f64> {
    Some(match highway {
        "motorway" => 100.0,
        "trunk" => 80.0,
        "primary" | "secondary" => 50.0,
        "tertiary" | "unclassified" => 40.0,
        "motorway_link" | "trunk_link" | "primary_link" | "secondary_link" | "tertiary_link" => {
            40.0
        }
        "residential" => 30.0,
        "living_street" => 20.0,
        _ => return None,
    })
}

struct Way {
    refs: Vec<i64>,
    speed_mps: f64,
    oneway: i8,
}

impl RoadGraph {
    /// Reads the drivable ways of an OSM PBF file.
    pub fn from_pbf(path: &Path) -> Result<Self, SimError> {
        let osm_err = |e: osmpbf::Error| SimError::Osm {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let mut coords: HashMap<i64, (f64, f64)> = HashMap::new();
        let mut signal_ids: HashSet<i64> = HashSet::new();
        let mut ways: Vec<Way> = Vec::new();
        let reader = ElementReader::from_path(path).map_err(osm_err)?;
        reader
            .for_each(|element| match element {
                Element::Node(n) => {
                    coords.insert(n.id(), (n.lat(), n.lon()));
                    if n.tags()
                        .any(|(k, v)| k == "highway" && v == "traffic_signals")
                    {
                        signal_ids.insert(n.id());
                    }
                }
                Element::DenseNode(n) => {
                    coords.insert(n.id(), (n.lat(), n.lon()));
                    if n.tags()
                        .any(|(k, v)| k == "highway" && v == "traffic_signals")
                    {
                        signal_ids.insert(n.id());
                    }
                }
                Element::Way(w) => {
                    if let Some(way) = drivable_way(&w) {
                        ways.push(way);
                    }
                }
                Element::Relation(_) => {}
            })
            .map_err(osm_err)?;

        let mut index: HashMap<i64, usize> = HashMap::new();
        let mut positions = Vec::new();
        let mut ends: HashMap<usize, usize> = HashMap::new();
        let mut edges: Vec<Vec<Edge>> = Vec::new();
        for way in &ways {
            let ids: Vec<usize> = way
                .refs
                .iter()
                .filter_map(|r| {
                    let pos = *coords.get(r)?;
                    Some(*index.entry(*r).or_insert_with(|| {
                        positions.push(pos);
                        edges.push(Vec::new());
                        positions.len() - 1
                    }))
                })
                .collect();
            for pair in ids.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                if a == b {
                    continue;
                }
                let length_m = haversine_m(positions[a], positions[b]);
                if way.oneway >= 0 {
                    edges[a].push(Edge {
                        to: b,
                        length_m,
                        speed_mps: way.speed_mps,
                    });
                }
                if way.oneway <= 0 {
                    edges[b].push(Edge {
                        to: a,
                        length_m,
                        speed_mps: way.speed_mps,
                    });
                }
            }
            for (i, id) in ids.iter().enumerate() {
                *ends.entry(*id).or_insert(0) += if i == 0 || i + 1 == ids.len() { 1 } else { 2 };
            }
        }
        if positions.is_empty() {
            return Err(SimError::Osm {
                path: path.to_owned(),
                message: "the extract has no drivable roads".into(),
            });
        }
        // A node with no way out (a one-way street ending, or the edge of the
        // extract) gets U-turn edges back along the roads that reach it, so a
        // car is never stuck.
        let mut uturns = Vec::new();
        for (a, out) in edges.iter().enumerate() {
            for e in out {
                if edges[e.to].is_empty() {
                    uturns.push((e.to, Edge { to: a, ..*e }));
                }
            }
        }
        for (from, edge) in uturns {
            edges[from].push(edge);
        }
        let signals = signal_ids
            .iter()
            .filter_map(|id| index.get(id).copied())
            .collect();
        let junctions = ends
            .into_iter()
            .filter(|(_, n)| *n > 2)
            .map(|(i, _)| i)
            .collect();
        Ok(Self {
            positions,
            edges,
            signals,
            junctions,
        })
    }

    /// The nodes of the largest set of mutually reachable nodes, so that a
    /// random walk started there keeps finding roads onwards.
    pub fn well_connected_nodes(&self) -> Vec<usize> {
        // Undirected components are enough: dead ends are left by U-turning.
        let n = self.positions.len();
        let mut undirected: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (a, out) in self.edges.iter().enumerate() {
            for e in out {
                undirected[a].push(e.to);
                undirected[e.to].push(a);
            }
        }
        let mut component = vec![usize::MAX; n];
        let mut best: Vec<usize> = Vec::new();
        for start in 0..n {
            if component[start] != usize::MAX {
                continue;
            }
            let mut members = vec![start];
            component[start] = start;
            let mut i = 0;
            while i < members.len() {
                let node = members[i];
                for &next in &undirected[node] {
                    if component[next] == usize::MAX {
                        component[next] = start;
                        members.push(next);
                    }
                }
                i += 1;
            }
            if members.len() > best.len() {
                best = members;
            }
        }
        best.sort_unstable();
        best.retain(|&node| !self.edges[node].is_empty());
        best
    }
}

/// A way a car may drive, with its speed and direction; `None` for paths,
/// private roads and areas.
fn drivable_way(w: &osmpbf::Way<'_>) -> Option<Way> {
    let tags: HashMap<&str, &str> = w.tags().collect();
    let kmh = tags.get("highway").and_then(|h| default_kmh(h))?;
    if matches!(tags.get("access"), Some(&"no" | &"private"))
        || matches!(tags.get("motor_vehicle"), Some(&"no" | &"private"))
        || matches!(tags.get("area"), Some(&"yes"))
    {
        return None;
    }
    let kmh = tags
        .get("maxspeed")
        .and_then(|m| m.split_whitespace().next())
        .and_then(|m| m.parse::<f64>().ok())
        .filter(|v| (5.0..=130.0).contains(v))
        .unwrap_or(kmh);
    let oneway = match tags.get("oneway") {
        Some(&"yes" | &"1" | &"true") => 1,
        Some(&"-1" | &"reverse") => -1,
        _ if tags.get("junction") == Some(&"roundabout") => 1,
        _ if tags.get("highway") == Some(&"motorway") => 1,
        _ => 0,
    };
    Some(Way {
        refs: w.refs().collect(),
        speed_mps: kmh / 3.6,
        oneway,
    })
}
