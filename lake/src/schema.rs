//! The Arrow schemas of hexroad's tables, and how rows become record batches.
//!
//! Two views of each schema exist: the one analysts see (`cell` is `UInt64`, as
//! H3 indexes are) and the one stored in Delta, which has no unsigned types
//! (`cell` is `Int64` there; the value is the same because H3 never sets bit 63).

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::DeviceId;
use crate::grid;
use crate::{DeviceRecord, GnssPoint, Result, TelemetrySample, UploadId, UploadRecord};

/// The tables `lake` owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableName {
    Devices,
    Uploads,
    Gnss,
    Telemetry,
    /// Published (and deduplicated) frames, written by the vision stage.
    Frames,
    /// What the vision stage concluded about each upload, latest row wins.
    Processing,
    /// Each epoch's amount per contributor and the parts it was made of.
    Rewards,
    /// The fraud rules' findings per epoch, with their evidence.
    FraudFlags,
    /// Areas (a home, a workplace) where nothing of a contributor's is
    /// published; latest row per zone wins.
    PrivacyZones,
    /// Contributor accounts: each one's signing key, latest row wins.
    Contributors,
    /// What vouched for each registration: the manufacturer's attestation,
    /// the contributor's signature binding the device.
    Enrolments,
}

impl TableName {
    pub const ALL: [TableName; 11] = [
        Self::Devices,
        Self::Uploads,
        Self::Gnss,
        Self::Telemetry,
        Self::Frames,
        Self::Processing,
        Self::Rewards,
        Self::FraudFlags,
        Self::PrivacyZones,
        Self::Contributors,
        Self::Enrolments,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Devices => "devices",
            Self::Uploads => "uploads",
            Self::Gnss => "gnss",
            Self::Telemetry => "telemetry",
            Self::Frames => "frames",
            Self::Processing => "processing",
            Self::Rewards => "rewards",
            Self::FraudFlags => "fraud_flags",
            Self::PrivacyZones => "privacy_zones",
            Self::Contributors => "contributors",
            Self::Enrolments => "enrolments",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn f64_field(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Float64, nullable)
}

/// The schema as stored in Delta.
pub fn stored_schema(table: TableName) -> SchemaRef {
    let fields = match table {
        TableName::Devices => vec![
            utf8("device_id", false),
            utf8("contributor_id", false),
            utf8("make", false),
            utf8("model", false),
            utf8("status", false),
            Field::new("registered_at", ts(), false),
            Field::new("changed_at", ts(), false),
        ],
        TableName::Uploads => vec![
            utf8("upload_id", false),
            utf8("device_id", false),
            utf8("contributor_id", false),
            utf8("kind", false),
            utf8("format", false),
            utf8("drive_id", true),
            Field::new("bytes", DataType::Int64, false),
            utf8("sha256", false),
            utf8("object_key", false),
            Field::new("received_at", ts(), false),
            utf8("status", false),
            utf8("reject_reason", true),
            utf8("duplicate_of", true),
            utf8("media", true),
        ],
        TableName::Gnss => vec![
            utf8("upload_id", false),
            utf8("device_id", false),
            Field::new("ts", ts(), false),
            f64_field("lat", false),
            f64_field("lon", false),
            f64_field("alt", true),
            f64_field("speed", true),
            f64_field("heading", true),
            f64_field("hdop", true),
            Field::new("cell", DataType::Int64, false),
        ],
        TableName::Telemetry => vec![
            utf8("upload_id", false),
            utf8("device_id", false),
            Field::new("ts", ts(), false),
            utf8("signal", false),
            f64_field("value", false),
        ],
        TableName::Frames => vec![
            utf8("frame_id", false),
            utf8("upload_id", false),
            utf8("device_id", false),
            utf8("contributor_id", false),
            Field::new("ts", ts(), false),
            f64_field("lat", false),
            f64_field("lon", false),
            f64_field("heading", false),
            f64_field("speed", false),
            Field::new("cell", DataType::Int64, false),
            // Null for a frame dropped as a duplicate: nothing is published.
            utf8("image_key", true),
            Field::new("width", DataType::Int32, false),
            Field::new("height", DataType::Int32, false),
            Field::new("image_bytes", DataType::Int64, false),
            Field::new("faces_blurred", DataType::Int32, false),
            Field::new("plates_blurred", DataType::Int32, false),
            // 64-bit DCT hash as 16 hex digits.
            utf8("phash", false),
            f64_field("quality", false),
            f64_field("sharpness", false),
            utf8("dedupe_of", true),
            utf8("dedupe_reason", true),
            utf8("model_versions", false),
            Field::new("processed_at", ts(), false),
        ],
        TableName::Processing => vec![
            utf8("upload_id", false),
            utf8("status", false),
            utf8("reason", true),
            Field::new("frames_published", DataType::Int64, false),
            Field::new("frames_deduplicated", DataType::Int64, false),
            utf8("worker", false),
            Field::new("at", ts(), false),
        ],
        TableName::Rewards => vec![
            utf8("epoch", false),
            utf8("contributor_id", false),
            Field::new("amount", DataType::Int64, false),
            Field::new("frames", DataType::Int64, false),
            Field::new("cells", DataType::Int64, false),
            // The sum of the cell parts, what the cap took, what others'
            // caps gave: amount = uncapped - capped_off + redistributed.
            Field::new("uncapped", DataType::Int64, false),
            Field::new("capped_off", DataType::Int64, false),
            Field::new("redistributed", DataType::Int64, false),
            Field::new("table_version", DataType::Int64, false),
            Field::new("closed_at", ts(), false),
        ],
        TableName::FraudFlags => vec![
            utf8("epoch", false),
            utf8("subject_kind", false),
            utf8("subject", false),
            utf8("rule", false),
            utf8("detail", false),
            Field::new("closed_at", ts(), false),
        ],
        TableName::PrivacyZones => vec![
            utf8("zone_id", false),
            utf8("contributor_id", false),
            // The device that declared it.
            utf8("device_id", false),
            f64_field("lat", false),
            f64_field("lon", false),
            f64_field("radius_m", false),
            utf8("status", false),
            Field::new("changed_at", ts(), false),
        ],
        TableName::Contributors => vec![
            utf8("contributor_id", false),
            // Hex of the account's ed25519 public key.
            utf8("public_key", false),
            Field::new("changed_at", ts(), false),
        ],
        TableName::Enrolments => vec![
            utf8("device_id", false),
            utf8("contributor_id", false),
            // Set when a trusted manufacturer's key attested the device.
            utf8("manufacturer", true),
            utf8("serial", true),
            // Whether the contributor's key signed the binding.
            Field::new("bound", DataType::Boolean, false),
            Field::new("at", ts(), false),
        ],
    };
    Arc::new(Schema::new(fields))
}

/// The schema analysts and the other crates see: H3 cells as `UInt64`.
pub fn schema(table: TableName) -> SchemaRef {
    let stored = stored_schema(table);
    let fields: Vec<Field> = stored
        .fields()
        .iter()
        .map(|f| {
            if f.name() == "cell" {
                Field::new("cell", DataType::UInt64, f.is_nullable())
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn micros(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_micros()
}

fn ts_array(values: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_iter_values(values).with_timezone("UTC"))
}

fn repeat_str(value: &str, n: usize) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(std::iter::repeat_n(value, n)))
}

pub(crate) fn devices_batch(rows: &[DeviceRecord]) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.device_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.contributor_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.make.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.model.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.status.as_str()),
        )),
        ts_array(rows.iter().map(|r| micros(r.registered_at))),
        ts_array(rows.iter().map(|r| micros(r.changed_at))),
    ];
    Ok(RecordBatch::try_new(
        stored_schema(TableName::Devices),
        cols,
    )?)
}

pub(crate) fn uploads_batch(rows: &[UploadRecord]) -> Result<RecordBatch> {
    let opt = |f: fn(&UploadRecord) -> Option<String>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<StringArray>())
    };
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.upload_id.to_string()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.device_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.contributor_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.kind.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.format.as_str()),
        )),
        opt(|r| r.drive_id.clone()),
        Arc::new(Int64Array::from_iter_values(
            rows.iter()
                .map(|r| i64::try_from(r.bytes).unwrap_or(i64::MAX)),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.sha256.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.object_key.as_str()),
        )),
        ts_array(rows.iter().map(|r| micros(r.received_at))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.status.as_str()),
        )),
        opt(|r| r.reject_reason.clone()),
        opt(|r| r.duplicate_of.map(|u| u.to_string())),
        opt(|r| r.media.clone()),
    ];
    Ok(RecordBatch::try_new(
        stored_schema(TableName::Uploads),
        cols,
    )?)
}

pub(crate) fn gnss_batch(
    upload: UploadId,
    device: &DeviceId,
    points: &[GnssPoint],
) -> Result<RecordBatch> {
    let n = points.len();
    let cells = points
        .iter()
        .map(|p| {
            Ok(grid::cell_to_stored(hexroad_wire::grid::cell_at(
                p.lat, p.lon,
            )?))
        })
        .collect::<Result<Vec<_>>>()?;
    let cols: Vec<ArrayRef> = vec![
        repeat_str(&upload.to_string(), n),
        repeat_str(device.as_str(), n),
        ts_array(points.iter().map(|p| micros(p.ts))),
        Arc::new(Float64Array::from_iter_values(points.iter().map(|p| p.lat))),
        Arc::new(Float64Array::from_iter_values(points.iter().map(|p| p.lon))),
        Arc::new(points.iter().map(|p| p.alt).collect::<Float64Array>()),
        Arc::new(points.iter().map(|p| p.speed).collect::<Float64Array>()),
        Arc::new(points.iter().map(|p| p.heading).collect::<Float64Array>()),
        Arc::new(points.iter().map(|p| p.hdop).collect::<Float64Array>()),
        Arc::new(Int64Array::from(cells)),
    ];
    Ok(RecordBatch::try_new(stored_schema(TableName::Gnss), cols)?)
}

pub(crate) fn telemetry_batch(
    upload: UploadId,
    device: &DeviceId,
    samples: &[TelemetrySample],
) -> Result<RecordBatch> {
    let n = samples.len();
    let cols: Vec<ArrayRef> = vec![
        repeat_str(&upload.to_string(), n),
        repeat_str(device.as_str(), n),
        ts_array(samples.iter().map(|s| micros(s.ts))),
        Arc::new(StringArray::from_iter_values(
            samples.iter().map(|s| s.signal.as_str()),
        )),
        Arc::new(Float64Array::from_iter_values(
            samples.iter().map(|s| s.value),
        )),
    ];
    Ok(RecordBatch::try_new(
        stored_schema(TableName::Telemetry),
        cols,
    )?)
}

/// The `frames` rows of one upload.
pub fn frames_batch(rows: &[crate::FrameRecord]) -> Result<RecordBatch> {
    use deltalake::arrow::array::Int32Array;
    let s = |f: fn(&crate::FrameRecord) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let opt = |f: fn(&crate::FrameRecord) -> Option<&str>| -> ArrayRef {
        Arc::new(StringArray::from_iter(rows.iter().map(f)))
    };
    let f64s = |f: fn(&crate::FrameRecord) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(f)))
    };
    let i32s = |f: fn(&crate::FrameRecord) -> u32| -> ArrayRef {
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| i32::try_from(f(r)).unwrap_or(i32::MAX)),
        ))
    };
    let frame_ids: Vec<String> = rows.iter().map(|r| r.frame_id.to_string()).collect();
    let dedupe_of: Vec<Option<String>> = rows
        .iter()
        .map(|r| r.dedupe_of.map(|id| id.to_string()))
        .collect();
    let ids: Vec<String> = rows.iter().map(|r| r.upload_id.to_string()).collect();
    let phashes: Vec<String> = rows.iter().map(|r| format!("{:016x}", r.phash)).collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(&frame_ids)),
        Arc::new(StringArray::from_iter_values(&ids)),
        s(|r| r.device_id.as_str()),
        s(|r| r.contributor_id.as_str()),
        ts_array(rows.iter().map(|r| micros(r.ts))),
        f64s(|r| r.lat),
        f64s(|r| r.lon),
        f64s(|r| r.heading),
        f64s(|r| r.speed),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.cell as i64),
        )),
        opt(|r| r.image_key.as_deref()),
        i32s(|r| r.width),
        i32s(|r| r.height),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.image_bytes as i64),
        )),
        i32s(|r| r.faces_blurred),
        i32s(|r| r.plates_blurred),
        Arc::new(StringArray::from_iter_values(&phashes)),
        f64s(|r| r.quality),
        f64s(|r| r.sharpness),
        Arc::new(StringArray::from_iter(dedupe_of)),
        opt(|r| r.dedupe_reason.as_deref()),
        s(|r| &r.model_versions),
        ts_array(rows.iter().map(|r| micros(r.processed_at))),
    ];
    Ok(RecordBatch::try_new(
        stored_schema(TableName::Frames),
        cols,
    )?)
}

/// One `processing` row.
pub fn processing_batch(row: &crate::ProcessingRecord) -> Result<RecordBatch> {
    let cols: Vec<ArrayRef> = vec![
        repeat_str(&row.upload_id.to_string(), 1),
        repeat_str(row.status.as_str(), 1),
        Arc::new(StringArray::from(vec![row.reason.as_deref()])),
        Arc::new(Int64Array::from(vec![row.frames_published as i64])),
        Arc::new(Int64Array::from(vec![row.frames_deduplicated as i64])),
        repeat_str(&row.worker, 1),
        ts_array([micros(row.at)]),
    ];
    Ok(RecordBatch::try_new(
        stored_schema(TableName::Processing),
        cols,
    )?)
}
