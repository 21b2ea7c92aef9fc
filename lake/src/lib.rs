//! hexroad's tables.
//!
//! `lake` owns the Arrow schemas of every table, stores them as Delta Lake
//! tables under `<store>/tables/<name>` on any `object_store` location (a local
//! folder by default), keeps raw blobs beside them, and builds the DataFusion
//! session that analysts and the other crates query.
//!
//! Writes that belong to one upload are made idempotent here: appending the
//! same upload twice adds nothing, and a crash between two tables' commits is
//! repaired by simply appending again. See [`Lake::commit_upload`].

pub mod columns;
mod error;
mod forget;
pub mod grid;
pub mod h3sql;
mod public;
pub mod reads;
mod records;
pub mod schema;
mod session;
mod sql;
mod storage;
mod store;
mod trust;
pub mod views;

pub use error::{Error, Result};
pub use records::{
    DeviceRecord, DeviceStatus, FrameRecord, ProcessingRecord, ProcessingStatus, UploadRecord,
    UploadStatus,
};
// The ids and samples rows are made of come from the ground-floor `wire`
// crate; they are imported here so modules can name them as `crate::…`.
pub use forget::Forgotten;
use hexroad_wire::{
    ContributorId, DeviceId, FrameId, GnssPoint, TelemetrySample, UploadId, UploadKind,
};
pub use public::{PUBLIC_VIEWS, Role, pseudonym};
pub use reads::changes::{Appended, PendingWatch};
pub use reads::map::{CoverageCell, CoveragePart, DriveEnds, FramePoint, TrackFix};
pub use reads::vision::{PendingUpload, PublishedHash};
pub use reads::{BoundingBox, Snapshot};
pub use schema::TableName;
pub use sql::{
    OutputFormat, QueryLimits, QueryOutput, Refusal, render_batches, render_batches_within,
};
pub use storage::{StorageSettings, is_s3_location, object_at};
pub use store::{
    CHECKPOINT_LOOK, CommitOutcome, EpochRows, Lake, Maintained, Maintenance, RECENT_UPLOADS,
    UploadSummary, root_url,
};
pub use trust::{ContributorKey, Enrolment, PrivacyZone, PrivacyZones};

/// The store crates, as `lake` uses them, so every crate names one version.
pub use deltalake::{arrow, datafusion};
pub use object_store;
