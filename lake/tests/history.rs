//! Idempotence beyond what the lake keeps in memory: uploads stored long
//! ago (pushed out of memory by newer ones, or from before a restart) are
//! found in `uploads` through the bloom filters on its key columns.

use hexroad_lake::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use hexroad_lake::datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
use hexroad_lake::{CommitOutcome, Lake, Maintenance, TableName, UploadStatus};
use hexroad_wire::UploadId;

#[path = "support/records.rs"]
mod records;
use records::{count, points, record, sha};

/// What a lake that remembers at most `memory` uploads answers about the
/// first upload, stored when later ones have pushed it out of memory.
async fn the_first_upload_is_still_found(lake: &Lake, first: UploadId, rows_before: (i64, i64)) {
    let again = lake
        .commit_upload(record(first, 1, &sha(0)), &points(4), &[])
        .await
        .unwrap();
    let CommitOutcome::AlreadyStored(stored) = again else {
        panic!("the same upload again was stored again: {again:?}")
    };
    assert_eq!(stored.upload_id, first);

    let resent = lake
        .commit_upload(record(UploadId::new_random(), 1, &sha(0)), &points(4), &[])
        .await
        .unwrap();
    let CommitOutcome::AlreadyStored(stored) = resent else {
        panic!("the same bytes from the same device were stored again: {resent:?}")
    };
    assert_eq!(stored.upload_id, first);

    let summary = lake.upload_summary(first).await.unwrap().unwrap();
    assert_eq!(summary.status, UploadStatus::Accepted);
    assert_eq!(summary.sha256, sha(0));
    assert!(
        lake.upload_summary(UploadId::new_random())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        (
            count(lake, "SELECT count(*) FROM uploads").await,
            count(lake, "SELECT count(*) FROM gnss").await
        ),
        rows_before,
        "nothing added"
    );
}

#[tokio::test]
async fn uploads_pushed_out_of_memory_are_found_by_id_and_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().to_string_lossy().into_owned();
    let lake = Lake::open(&location).await.unwrap().with_recent_uploads(2);
    let first = UploadId::new_random();
    for n in 0..8 {
        let id = if n == 0 {
            first
        } else {
            UploadId::new_random()
        };
        let out = lake
            .commit_upload(record(id, n as u8 + 1, &sha(n)), &points(4), &[])
            .await
            .unwrap();
        assert!(matches!(out, CommitOutcome::Committed(_)), "{out:?}");
        let (held, most) = lake.recent_uploads();
        assert!(held <= most && most == 2, "{held} of {most} in memory");
    }
    the_first_upload_is_still_found(&lake, first, (8, 32)).await;

    // The same bytes from another device: a duplicate of the first.
    let copy = lake
        .commit_upload(record(UploadId::new_random(), 9, &sha(0)), &points(4), &[])
        .await
        .unwrap();
    let CommitOutcome::Committed(copy) = copy else {
        panic!("{copy:?}")
    };
    assert_eq!(copy.status, UploadStatus::Duplicate);
    assert_eq!(copy.duplicate_of, Some(first));
    for n in 10..14 {
        lake.commit_upload(
            record(UploadId::new_random(), n, &sha(n as usize)),
            &points(4),
            &[],
        )
        .await
        .unwrap();
    }

    // Compacted (rewritten with their bloom filters), and a new process.
    lake.maintain(&Maintenance {
        compact_over_files: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(lake.data_files(TableName::Uploads).await.unwrap(), 1);
    drop(lake);
    let lake = Lake::open(&location).await.unwrap().with_recent_uploads(1);
    assert_eq!(
        lake.recent_uploads().0,
        0,
        "a new process remembers nothing"
    );
    the_first_upload_is_still_found(&lake, first, (13, 48)).await;
    let again = lake
        .commit_upload(record(copy.upload_id, 9, &sha(0)), &[], &[])
        .await
        .unwrap();
    assert!(
        matches!(&again, CommitOutcome::AlreadyStored(s) if s.status == UploadStatus::Duplicate),
        "{again:?}"
    );

    // Compaction sorted the file by content hash.
    let uris = lake.data_file_uris(TableName::Uploads).await.unwrap();
    let path: std::path::PathBuf = url::Url::parse(&uris[0])
        .ok()
        .and_then(|u| u.to_file_path().ok())
        .unwrap_or_else(|| uris[0].clone().into());
    let mut hashes = Vec::new();
    let rows = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    for batch in rows {
        let batch = batch.unwrap();
        let column = batch.column_by_name("sha256").unwrap();
        let column = hexroad_lake::arrow::array::AsArray::as_string::<i32>(column.as_ref());
        hashes.extend(column.iter().map(|h| h.unwrap().to_owned()));
    }
    assert_eq!(hashes.len(), 13);
    assert!(hashes.is_sorted(), "{hashes:?}");

    // Every `uploads` file carries bloom filters on both key columns.
    for uri in lake.data_file_uris(TableName::Uploads).await.unwrap() {
        let path = url::Url::parse(&uri)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .unwrap_or_else(|| uri.clone().into());
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let metadata = reader.metadata();
        let schema = metadata.file_metadata().schema_descr();
        for key in ["upload_id", "sha256"] {
            let column = (0..schema.num_columns())
                .find(|&i| schema.column(i).name() == key)
                .unwrap();
            for group in metadata.row_groups() {
                assert!(
                    group.column(column).bloom_filter_offset().is_some(),
                    "{key} has no bloom filter in {uri}"
                );
            }
        }
    }
}
