//! What the tiles tests share: publishing frames the way the vision worker
//! commits them (frames, then the upload's verdict).

use chrono::{DateTime, Utc};
use hexroad_lake::{FrameRecord, Lake, ProcessingRecord, ProcessingStatus, TableName};
use hexroad_wire::{ContributorId, DeviceId, FrameId, UploadId};

/// Publishes `points` as one upload's frames, the i-th taken at `ts(i)`,
/// then its verdict at `at`; returns their cells.
pub async fn publish_at(
    lake: &Lake,
    upload: u128,
    points: &[(f64, f64)],
    ts: impl Fn(usize) -> DateTime<Utc>,
    at: DateTime<Utc>,
) -> Vec<h3o::CellIndex> {
    let upload = UploadId(uuid::Uuid::from_u128(upload));
    let rows: Vec<FrameRecord> = points
        .iter()
        .enumerate()
        .map(|(i, &(lat, lon))| {
            (
                i,
                lat,
                lon,
                FrameId::from_bytes((upload.0.as_u128() * 1000 + i as u128).to_be_bytes()),
            )
        })
        .map(|(i, lat, lon, frame_id)| FrameRecord {
            frame_id,
            upload_id: upload,
            device_id: DeviceId::from_public_key(&[7; 32]),
            contributor_id: "contributor-1".parse::<ContributorId>().unwrap(),
            ts: ts(i),
            lat,
            lon,
            heading: 90.0,
            speed: 10.0,
            cell: hexroad_wire::grid::cell_at(lat, lon).unwrap().into(),
            image_key: Some(frame_id.image_key()),
            width: 320,
            height: 240,
            image_bytes: 1000,
            faces_blurred: 0,
            plates_blurred: 0,
            phash: 0,
            quality: 1.0,
            sharpness: 1.0,
            dedupe_of: None,
            dedupe_reason: None,
            model_versions: "test".into(),
            processed_at: at,
        })
        .collect();
    let batch = hexroad_lake::schema::frames_batch(&rows).unwrap();
    lake.append_rows(TableName::Frames, batch).await.unwrap();
    let verdict = ProcessingRecord {
        upload_id: upload,
        status: ProcessingStatus::Processed,
        reason: None,
        frames_published: rows.len() as u64,
        frames_deduplicated: 0,
        worker: "test".into(),
        at,
    };
    let batch = hexroad_lake::schema::processing_batch(&verdict).unwrap();
    lake.append_rows(TableName::Processing, batch)
        .await
        .unwrap();
    points
        .iter()
        .map(|&(lat, lon)| hexroad_wire::grid::cell_at(lat, lon).unwrap())
        .collect()
}
