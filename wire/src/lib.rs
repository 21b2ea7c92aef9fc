//! What hexroad's devices and its server share.
//!
//! The ground floor beside `lake`: ids ([`DeviceId`], [`ContributorId`],
//! [`UploadId`], [`FrameId`]), the samples a device sends ([`GnssPoint`],
//! [`TelemetrySample`]) and the kind of an upload ([`UploadKind`]), the wire
//! formats (GPX 1.1 / NMEA 0183 tracks in [`track`], COVESA VSS telemetry in
//! [`vss`], RFC 9421 message signatures in [`signature`]) and the grid
//! helpers ([`grid`]).
//!
//! It links neither Delta Lake nor DataFusion, so a device (the simulated
//! dashcam, or firmware written against this crate) stays small.

pub mod enrol;
pub mod grid;
mod ids;
pub mod jpeg;
mod samples;
pub mod settings;
pub mod signature;
pub mod track;
pub mod vss;

pub use ids::{ContributorId, DeviceId, FrameId, IdError, UploadId};
pub use samples::{GnssPoint, TelemetrySample, UploadKind};
