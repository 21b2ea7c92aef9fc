//! The device-facing HTTP service.
//!
//! Devices register an ed25519 key (`POST /v1/devices`), then sign every
//! request with RFC 9421 HTTP Message Signatures and upload with the tus 1.0
//! resumable protocol at `/v1/uploads`. Bytes are streamed to the object store
//! as they arrive; when the last byte lands the upload is checked against the
//! sha256 the device declared, validated (GStreamer's discoverer for video,
//! GPX/NMEA and VSS rules for tracks and telemetry) and committed to the lake
//! before the final `PATCH` is answered: acknowledged means durable.
//!
//! Build the router with [`app`]; [`Ingest::open`] gathers its state.

mod app;
mod auth;
mod config;
mod devices;
mod enrol;
mod extract;
mod finish;
mod limits;
mod metrics;
mod openapi;
mod probe;
mod shared;
mod sweep;
mod tus;
pub mod tus_headers;
mod uploads;
mod validate;
mod zones;

pub use app::{Ingest, app};
pub use config::{IngestConfig, MediaLimits, RegistrationMode};
pub use hexroad_http::ApiError;
pub use shared::Shared;
pub use sweep::Swept;
pub use validate::Rejection;

/// The clock the service reads; tests pass a fixed one.
pub type Clock = std::sync::Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    std::sync::Arc::new(chrono::Utc::now)
}

/// Errors starting the service (not request errors; those are [`ApiError`]).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the lake")]
    Lake(#[from] hexroad_lake::Error),
    #[error("initialising GStreamer (is libgstreamer1.0 installed?): {0}")]
    Gstreamer(String),
    #[error("invalid settings")]
    Setting(#[from] hexroad_wire::settings::SettingError),
}
