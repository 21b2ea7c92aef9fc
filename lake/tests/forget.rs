//! Issue 15: the right to be forgotten. Forgetting a contributor removes
//! its rows from every table, its images and raw footage, and the data
//! files that held them (no time travel brings them back); other
//! contributors and closed epochs' ledger rows are untouched.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use deltalake::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use hexroad_lake::object_store::{ObjectStoreExt, PutPayload};
use hexroad_lake::schema::{frames_batch, stored_schema};
use hexroad_lake::{
    ContributorKey, Enrolment, FrameRecord, Lake, PrivacyZone, TableName, UploadRecord,
    UploadStatus,
};
use hexroad_wire::{
    ContributorId, DeviceId, FrameId, GnssPoint, TelemetrySample, UploadId, UploadKind,
};

fn device_of(who: &str) -> DeviceId {
    DeviceId::from_public_key(&[if who == "alice" { 0xa1 } else { 0xb0 }; 32])
}

/// One accepted GNSS upload, its telemetry, a published frame with its
/// image and the raw object, all of `who`'s.
async fn contribute(lake: &Lake, who: &str, n: u128) {
    let device = device_of(who);
    let contributor: ContributorId = who.parse().unwrap();
    let upload = UploadId(uuid::Uuid::from_u128(n));
    let t0 = Utc.with_ymd_and_hms(2026, 6, 1, 8, 0, 0).unwrap();
    let fixes: Vec<GnssPoint> = (0..10)
        .map(|i| GnssPoint {
            ts: t0 + chrono::Duration::seconds(i),
            lat: 60.17 + i as f64 * 1e-4,
            lon: 24.94,
            alt: None,
            speed: Some(10.0),
            heading: Some(0.0),
            hdop: Some(1.0),
        })
        .collect();
    let samples = vec![TelemetrySample {
        ts: t0,
        signal: "Vehicle.Speed".into(),
        value: 36.0,
    }];
    let object_key = format!("raw/{device}/{upload}");
    lake.blobs()
        .put(&object_key.as_str().into(), PutPayload::from_static(b"raw"))
        .await
        .unwrap();
    let record = UploadRecord {
        upload_id: upload,
        device_id: device.clone(),
        contributor_id: contributor.clone(),
        kind: UploadKind::Gnss,
        format: "gpx".into(),
        drive_id: Some("d".into()),
        bytes: 3,
        sha256: format!("{n:064x}"),
        object_key,
        received_at: t0,
        status: UploadStatus::Accepted,
        reject_reason: None,
        duplicate_of: None,
        media: None,
    };
    lake.commit_upload(record, &fixes, &samples).await.unwrap();
    let frame = FrameId::from_bytes([n as u8; 16]);
    lake.blobs()
        .put(
            &frame.image_key().as_str().into(),
            PutPayload::from_static(b"jpeg"),
        )
        .await
        .unwrap();
    let row = FrameRecord {
        frame_id: frame,
        upload_id: upload,
        device_id: device.clone(),
        contributor_id: contributor.clone(),
        ts: t0,
        lat: 60.17,
        lon: 24.94,
        heading: 0.0,
        speed: 10.0,
        cell: hexroad_wire::grid::cell_at(60.17, 24.94).unwrap().into(),
        image_key: Some(frame.image_key()),
        width: 8,
        height: 8,
        image_bytes: 4,
        faces_blurred: 0,
        plates_blurred: 0,
        phash: 0,
        quality: 1.0,
        sharpness: 1.0,
        dedupe_of: None,
        dedupe_reason: None,
        model_versions: "test".into(),
        processed_at: t0,
    };
    lake.append_rows(TableName::Frames, frames_batch(&[row]).unwrap())
        .await
        .unwrap();
    lake.record_privacy_zone(&PrivacyZone {
        zone_id: uuid::Uuid::from_u128(n),
        contributor_id: contributor.clone(),
        device_id: device.clone(),
        lat: 60.0,
        lon: 24.0,
        radius_m: 100.0,
        active: true,
        changed_at: t0,
    })
    .await
    .unwrap();
    lake.record_contributor_key(&ContributorKey {
        contributor_id: contributor.clone(),
        public_key: [n as u8; 32],
        changed_at: t0,
    })
    .await
    .unwrap();
    lake.record_enrolment(&Enrolment {
        device_id: device,
        contributor_id: contributor,
        manufacturer: None,
        serial: None,
        bound: true,
        at: t0,
    })
    .await
    .unwrap();
}

/// A closed epoch's ledger row paying `who`.
async fn paid(lake: &Lake, who: &str) {
    let s = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    let i = |v: i64| Arc::new(Int64Array::from(vec![v])) as ArrayRef;
    let closed = Arc::new(
        deltalake::arrow::array::TimestampMicrosecondArray::from(vec![0]).with_timezone("UTC"),
    ) as ArrayRef;
    let batch = RecordBatch::try_new(
        stored_schema(TableName::Rewards),
        vec![
            s("2026-W22"),
            s(who),
            i(100),
            i(1),
            i(1),
            i(100),
            i(0),
            i(0),
            i(1),
            closed,
        ],
    )
    .unwrap();
    lake.commit_epoch_rows(TableName::Rewards, "2026-W22", 1, batch)
        .await
        .unwrap();
}

async fn count(lake: &Lake, sql: &str) -> i64 {
    let out = lake.query(sql).await.unwrap();
    hexroad_lake::columns::i64s(&out.batches[0], "n").unwrap()[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_a_contributor_removes_its_data_and_keeps_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().to_string_lossy()).await.unwrap();
    contribute(&lake, "alice", 1).await;
    contribute(&lake, "bob", 2).await;
    paid(&lake, "alice").await;
    let tables = [
        "devices",
        "uploads",
        "gnss",
        "telemetry",
        "frames",
        "privacy_zones",
        "contributors",
        "enrolments",
    ];
    let alices_device = device_of("alice").to_string();

    let forgotten = lake
        .forget_contributor(&"alice".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(forgotten.objects, 2, "{forgotten:?}");
    assert!(forgotten.files_vacuumed > 0, "{forgotten:?}");
    for (sql, left) in [
        (
            "SELECT count(*) AS n FROM uploads WHERE contributor_id = 'alice'",
            0,
        ),
        (
            "SELECT count(*) AS n FROM frames WHERE contributor_id = 'alice'",
            0,
        ),
        (
            "SELECT count(*) AS n FROM privacy_zones WHERE contributor_id = 'alice'",
            0,
        ),
        (
            "SELECT count(*) AS n FROM contributors WHERE contributor_id = 'alice'",
            0,
        ),
        (
            "SELECT count(*) AS n FROM enrolments WHERE contributor_id = 'alice'",
            0,
        ),
        (
            "SELECT count(*) AS n FROM uploads WHERE contributor_id = 'bob'",
            1,
        ),
        ("SELECT count(*) AS n FROM gnss", 10),
        ("SELECT count(*) AS n FROM telemetry", 1),
        ("SELECT count(*) AS n FROM frames", 1),
        (
            "SELECT count(*) AS n FROM rewards WHERE contributor_id = 'alice'",
            1,
        ),
    ] {
        assert_eq!(count(&lake, sql).await, left, "{sql}");
    }
    let gnss_of_alice =
        format!("SELECT count(*) AS n FROM gnss WHERE device_id = '{alices_device}'");
    assert_eq!(count(&lake, &gnss_of_alice).await, 0);
    let blobs = lake.blobs();
    assert!(
        blobs
            .get(&FrameId::from_bytes([1; 16]).image_key().as_str().into())
            .await
            .is_err()
    );
    assert!(
        blobs
            .get(&FrameId::from_bytes([2; 16]).image_key().as_str().into())
            .await
            .is_ok()
    );

    // No earlier version of any table holds Alice's rows any more: every
    // data file that did is gone.
    let mut parquet_with_alice = 0;
    for table in tables {
        for entry in walk(&dir.path().join("tables").join(table)) {
            if entry.extension().is_some_and(|e| e == "parquet") {
                let bytes = std::fs::read(&entry).unwrap();
                let needles: [&[u8]; 2] = [b"alice", alices_device.as_bytes()];
                if needles
                    .iter()
                    .any(|n| bytes.windows(n.len()).any(|w| w == *n))
                {
                    parquet_with_alice += 1;
                }
            }
        }
    }
    assert_eq!(parquet_with_alice, 0, "data files still holding alice");

    // Again: nothing more to forget.
    let again = lake
        .forget_contributor(&"alice".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(again.objects, 0);
    assert!(again.rows.iter().all(|(_, n)| *n == 0), "{again:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
