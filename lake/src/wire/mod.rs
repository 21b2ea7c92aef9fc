//! The formats devices and the ingest service exchange: GNSS tracks (GPX 1.1,
//! NMEA 0183), COVESA VSS telemetry, and RFC 9421 message signatures.
//!
//! They live in `lake` because both sides need them (the simulated fleet
//! writes and signs, ingest parses and verifies) and crates depend only on
//! `lake`, never sideways.

pub mod signature;
pub mod track;
pub mod vss;
