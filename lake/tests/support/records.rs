//! Records and fixes the lake tests commit, and a count read back by SQL.

// Each test binary uses its own subset of these.
#![allow(dead_code)]

use chrono::{TimeZone, Utc};
use hexroad_lake::{Lake, UploadRecord, UploadStatus};
use hexroad_wire::{ContributorId, DeviceId, GnssPoint, UploadId, UploadKind};

/// An accepted GPX upload from device `device` with content hash `sha`.
pub fn record(id: UploadId, device: u8, sha: &str) -> UploadRecord {
    UploadRecord {
        upload_id: id,
        device_id: DeviceId::from_public_key(&[device; 32]),
        contributor_id: "alice".parse::<ContributorId>().unwrap(),
        kind: UploadKind::Gnss,
        format: "gpx".into(),
        drive_id: None,
        bytes: 10,
        sha256: sha.into(),
        object_key: format!("raw/{id}"),
        received_at: Utc::now(),
        status: UploadStatus::Accepted,
        reject_reason: None,
        duplicate_of: None,
        media: None,
    }
}

/// A content hash, distinct for each `n`.
pub fn sha(n: usize) -> String {
    format!("{n:064x}")
}

/// `n` fixes a second apart, heading north through Helsinki.
pub fn points(n: usize) -> Vec<GnssPoint> {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 1, 8, 0, 0).unwrap();
    (0..n)
        .map(|i| GnssPoint {
            ts: t0 + chrono::Duration::seconds(i as i64),
            lat: 60.17 + i as f64 * 1e-5,
            lon: 24.94,
            alt: None,
            speed: None,
            heading: None,
            hdop: None,
        })
        .collect()
}

/// The one BIGINT `sql` answers.
pub async fn count(lake: &Lake, sql: &str) -> i64 {
    let out = lake.query(sql).await.unwrap();
    let col = out.batches[0].column(0);
    col.as_any()
        .downcast_ref::<hexroad_lake::arrow::array::Int64Array>()
        .unwrap()
        .value(0)
}
