//! A simulated fleet of dashcams.
//!
//! Each device drives the real road network of an OSM extract (a seeded random
//! walk at plausible speeds, braking for junctions and waiting at red lights),
//! records H.264 video with GStreamer, GNSS at 1–10 Hz with noise, HDOP and
//! drop-outs, and COVESA VSS telemetry, and uploads it all through the real
//! ingest API: registration, RFC 9421 signatures, tus with resume.
//!
//! Adversarial roles exercise the defences: spoofers teleport, replayers
//! resend signed requests, duplicators re-upload another device's drive.
//!
//! Everything random comes from `--seed`: the same seed gives the same keys,
//! routes, noise and (for the same `--start`) the same bytes.

mod client;
mod device;
mod drive;
mod fleet;
mod roads;
mod sensors;
mod video;

pub use client::{DeviceClient, Outcome, Stats, UploadSpec, Vouchers};
pub use device::{DeviceKey, Manufacturer, VouchingKey};
pub use drive::{Car, STEP_S, Sample};
pub use fleet::{DeviceReport, Progress, Role, SimConfig, SimReport, run};
pub use roads::RoadGraph;
pub use video::{VideoSpec, encode as encode_video};

use std::path::PathBuf;

/// What can stop a simulation.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("reading OSM extract {path}: {message}")]
    Osm { path: PathBuf, message: String },
    #[error("encoding video: {0}")]
    Video(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("{what}: server answered {status}: {body}")]
    Refused {
        what: String,
        status: u16,
        body: String,
    },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid simulation settings: {0}")]
    Config(String),
}
