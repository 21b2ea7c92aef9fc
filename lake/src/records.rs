//! The rows the ingest side writes, as Rust values before they become Arrow.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{ContributorId, DeviceId, FrameId, UploadId, UploadKind};

/// Whether a device may still upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    Active,
    Revoked,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// One row of `devices`: the table is an append-only log of registrations and
/// status changes, and a device's current state is its latest row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub device_id: DeviceId,
    pub contributor_id: ContributorId,
    pub make: String,
    pub model: String,
    pub status: DeviceStatus,
    /// When this row was written (registration or status change).
    pub changed_at: DateTime<Utc>,
    /// When the device first registered.
    pub registered_at: DateTime<Utc>,
}

/// What became of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadStatus {
    /// Validated; its rows are in the tables and its blob under `raw/`.
    Accepted,
    /// The same bytes were already accepted from another device: kept for
    /// fraud review, but none of its rows are added again.
    Duplicate,
    /// Failed validation; `reject_reason` says why. Nothing else was stored.
    Rejected,
}

impl UploadStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(Self::Accepted),
            "duplicate" => Some(Self::Duplicate),
            "rejected" => Some(Self::Rejected),
            _ => None,
        }
    }
}

/// One row of `uploads`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub upload_id: UploadId,
    pub device_id: DeviceId,
    pub contributor_id: ContributorId,
    pub kind: UploadKind,
    /// The file format inside the kind: `mp4`, `gpx`, `nmea`, `tar`, `ndjson`.
    pub format: String,
    /// Groups the uploads of one drive (video, its track, its telemetry).
    pub drive_id: Option<String>,
    pub bytes: u64,
    /// Lowercase hex sha256 of the whole upload.
    pub sha256: String,
    /// Where the raw bytes are kept (`raw/<device>/<upload>`); empty if rejected.
    pub object_key: String,
    pub received_at: DateTime<Utc>,
    pub status: UploadStatus,
    /// Machine-readable code and message, for rejected and duplicate uploads.
    pub reject_reason: Option<String>,
    /// For duplicates: the upload that first carried these bytes.
    pub duplicate_of: Option<UploadId>,
    /// Media details probed at ingest (duration, codec, size) as JSON.
    pub media: Option<String>,
}

/// One frame the vision stage published or dropped as a duplicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameRecord {
    pub frame_id: FrameId,
    pub upload_id: UploadId,
    pub device_id: DeviceId,
    pub contributor_id: ContributorId,
    pub ts: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    pub heading: f64,
    pub speed: f64,
    /// H3 cell at resolution 15.
    pub cell: u64,
    /// `frames/…` key of the anonymized JPEG; `None` when deduplicated.
    pub image_key: Option<String>,
    pub width: u32,
    pub height: u32,
    pub image_bytes: u64,
    pub faces_blurred: u32,
    pub plates_blurred: u32,
    pub phash: u64,
    pub quality: f64,
    pub sharpness: f64,
    pub dedupe_of: Option<FrameId>,
    pub dedupe_reason: Option<String>,
    pub model_versions: String,
    pub processed_at: DateTime<Utc>,
}

/// What the vision stage concluded about an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingStatus {
    /// Frames were published (or all were duplicates).
    Processed,
    /// The upload itself is unusable (no track, nothing decodable).
    Rejected,
    /// hexroad failed (a model, a detection): nothing was published; retried
    /// once the cause is fixed.
    Failed,
}

impl ProcessingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processed => "processed",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessingRecord {
    pub upload_id: UploadId,
    pub status: ProcessingStatus,
    pub reason: Option<String>,
    pub frames_published: u64,
    pub frames_deduplicated: u64,
    pub worker: String,
    pub at: DateTime<Utc>,
}
