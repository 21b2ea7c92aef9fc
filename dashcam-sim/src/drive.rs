//! A car driving the road graph: a random walk at plausible speeds, braking
//! for junctions and waiting at red lights.

use chrono::{DateTime, Duration, Utc};
use hexroad_wire::grid::bearing_deg;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::roads::RoadGraph;

/// Simulation step, seconds.
pub const STEP_S: f64 = 0.1;
/// Speed through a junction, m/s (about 18 km/h).
const TURN_SPEED: f64 = 5.0;
/// Comfortable braking, m/s².
const BRAKE: f64 = 2.5;

/// The true state of the car at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub ts: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    /// m/s
    pub speed: f64,
    /// degrees from north
    pub heading: f64,
    /// metres driven since the start of the drive
    pub distance_m: f64,
}

/// Where the car is between steps.
#[derive(Debug, Clone)]
pub struct Car {
    from: usize,
    edge: usize,
    along_m: f64,
    speed: f64,
    accel: f64,
    /// The driver's speed relative to the limit (some drive a little over).
    temperament: f64,
    /// Seconds left waiting at a red light.
    waiting_s: f64,
    /// Whether the light ahead has been decided red.
    red_ahead: Option<bool>,
    distance_m: f64,
}

impl Car {
    /// Places a car at a random well-connected node.
    pub fn new(graph: &RoadGraph, starts: &[usize], rng: &mut ChaCha8Rng) -> Self {
        let from = starts[rng.random_range(0..starts.len())];
        let edge = rng.random_range(0..graph.edges[from].len());
        Self {
            from,
            edge,
            along_m: 0.0,
            speed: 0.0,
            accel: rng.random_range(1.4..2.4),
            temperament: rng.random_range(0.85..1.08),
            waiting_s: 0.0,
            red_ahead: None,
            distance_m: 0.0,
        }
    }

    /// Drives for `duration`, returning a sample every [`STEP_S`].
    pub fn drive(
        &mut self,
        graph: &RoadGraph,
        start: DateTime<Utc>,
        duration: std::time::Duration,
        rng: &mut ChaCha8Rng,
    ) -> Vec<Sample> {
        let steps = (duration.as_secs_f64() / STEP_S).round() as usize;
        let mut out = Vec::with_capacity(steps + 1);
        for i in 0..=steps {
            let ts = start + Duration::milliseconds((i as f64 * STEP_S * 1000.0).round() as i64);
            out.push(self.sample(graph, ts));
            self.step(graph, rng);
        }
        out
    }

    fn sample(&self, graph: &RoadGraph, ts: DateTime<Utc>) -> Sample {
        let e = graph.edges[self.from][self.edge];
        let a = graph.positions[self.from];
        let b = graph.positions[e.to];
        let f = if e.length_m > 0.0 {
            (self.along_m / e.length_m).clamp(0.0, 1.0)
        } else {
            0.0
        };
        Sample {
            ts,
            lat: a.0 + (b.0 - a.0) * f,
            lon: a.1 + (b.1 - a.1) * f,
            speed: self.speed,
            heading: bearing_deg(a, b),
            distance_m: self.distance_m,
        }
    }

    fn step(&mut self, graph: &RoadGraph, rng: &mut ChaCha8Rng) {
        if self.waiting_s > 0.0 {
            self.waiting_s -= STEP_S;
            self.speed = 0.0;
            return;
        }
        let e = graph.edges[self.from][self.edge];
        let remaining = (e.length_m - self.along_m).max(0.0);
        let node = e.to;
        if self.red_ahead.is_none() && graph.signals.contains(&node) && remaining < 60.0 {
            self.red_ahead = Some(rng.random_bool(0.45));
        }
        let stop_ahead = self.red_ahead == Some(true);
        let node_speed = if stop_ahead {
            0.0
        } else if graph.junctions.contains(&node) || graph.edges[node].len() <= 1 {
            TURN_SPEED
        } else {
            e.speed_mps * self.temperament
        };
        let cruise = e.speed_mps * self.temperament;
        // The fastest speed from which the car can still slow to node_speed.
        let brake_limit = (node_speed * node_speed + 2.0 * BRAKE * remaining).sqrt();
        let target = cruise.min(brake_limit);
        if self.speed < target {
            self.speed = (self.speed + self.accel * STEP_S).min(target);
        } else {
            self.speed = (self.speed - BRAKE * 1.6 * STEP_S).max(target).max(0.0);
        }
        if stop_ahead && remaining < 2.0 {
            self.speed = 0.0;
            self.waiting_s = rng.random_range(8.0..40.0);
            self.red_ahead = Some(false);
            return;
        }
        if stop_ahead && self.speed < 0.3 {
            // Creep to the stop line.
            self.speed = 0.3_f64.min(remaining / STEP_S);
        }
        let mut travel = self.speed * STEP_S;
        self.distance_m += travel;
        // Bounded: a run of zero-length edges (duplicate OSM nodes) cannot spin.
        for _ in 0..64 {
            let e = graph.edges[self.from][self.edge];
            let left = e.length_m - self.along_m;
            if travel < left {
                self.along_m += travel;
                return;
            }
            travel -= left.max(0.0);
            self.advance(graph, rng);
        }
    }

    /// Moves onto a next edge at the end node: anywhere but back, unless the
    /// road ends (every node has a way out: see [`RoadGraph::from_pbf`]).
    fn advance(&mut self, graph: &RoadGraph, rng: &mut ChaCha8Rng) {
        let node = graph.edges[self.from][self.edge].to;
        let came_from = self.from;
        let out = &graph.edges[node];
        let onward: Vec<usize> = (0..out.len()).filter(|&i| out[i].to != came_from).collect();
        self.edge = if onward.is_empty() {
            rng.random_range(0..out.len().max(1))
        } else {
            onward[rng.random_range(0..onward.len())]
        };
        self.from = node;
        self.along_m = 0.0;
        self.red_ahead = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roads::Edge;
    use hexroad_wire::grid::haversine_m;
    use rand::SeedableRng;
    use std::collections::HashSet;

    /// A square block of four 100 m roads, two-way, with a light at node 2.
    fn block() -> RoadGraph {
        let d = 100.0 / 111_195.0;
        let positions = vec![
            (60.0, 25.0),
            (60.0 + d, 25.0),
            (60.0 + d, 25.0 + 2.0 * d),
            (60.0, 25.0 + 2.0 * d),
        ];
        let mut edges = vec![Vec::new(); 4];
        for (a, b) in [(0, 1), (1, 2), (2, 3), (3, 0)] {
            let len = haversine_m(positions[a], positions[b]);
            edges[a].push(Edge {
                to: b,
                length_m: len,
                speed_mps: 50.0 / 3.6,
            });
            edges[b].push(Edge {
                to: a,
                length_m: len,
                speed_mps: 50.0 / 3.6,
            });
        }
        RoadGraph {
            positions,
            edges,
            signals: HashSet::from([2]),
            junctions: HashSet::new(),
        }
    }

    #[test]
    fn speed_stays_plausible_and_the_car_moves() {
        let g = block();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut car = Car::new(&g, &[0, 1, 2, 3], &mut rng);
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let samples = car.drive(&g, t0, std::time::Duration::from_secs(300), &mut rng);
        assert!(samples.iter().all(|s| s.speed <= 50.0 / 3.6 * 1.1));
        assert!(samples.last().unwrap().distance_m > 500.0);
        // Position never jumps faster than the car's speed allows.
        for w in samples.windows(2) {
            let d = haversine_m((w[0].lat, w[0].lon), (w[1].lat, w[1].lon));
            assert!(d <= 15.0 * STEP_S + 0.5, "jump of {d} m");
        }
    }

    /// Regression: a car reaching a one-way dead end spun forever.
    #[test]
    fn a_one_way_dead_end_does_not_trap_the_car() {
        let d = 100.0 / 111_195.0;
        let positions = vec![(60.0, 25.0), (60.0 + d, 25.0)];
        let len = haversine_m(positions[0], positions[1]);
        // One way in, and (as RoadGraph::from_pbf adds) a U-turn out.
        let edges = vec![
            vec![Edge {
                to: 1,
                length_m: len,
                speed_mps: 10.0,
            }],
            vec![Edge {
                to: 0,
                length_m: len,
                speed_mps: 10.0,
            }],
        ];
        let g = RoadGraph {
            positions,
            edges,
            signals: HashSet::new(),
            junctions: HashSet::new(),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut car = Car::new(&g, &[0], &mut rng);
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let samples = car.drive(&g, t0, std::time::Duration::from_secs(120), &mut rng);
        assert!(samples.last().unwrap().distance_m > 300.0);
    }

    #[test]
    fn same_seed_same_drive() {
        let g = block();
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut car = Car::new(&g, &[0, 1, 2, 3], &mut rng);
            car.drive(&g, t0, std::time::Duration::from_secs(60), &mut rng)
        };
        assert_eq!(run(7), run(7));
    }
}
