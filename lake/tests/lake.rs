//! The lake on a local folder: where things land, and idempotent commits.

use chrono::Utc;
use hexroad_lake::object_store::path::Path;
use hexroad_lake::object_store::{ObjectStoreExt, PutPayload};
use hexroad_lake::{CommitOutcome, Lake, UploadRecord, UploadStatus};
use hexroad_wire::{GnssPoint, UploadId, UploadKind};

#[path = "support/records.rs"]
mod records;
use records::{count, points, record, sha};

/// Files in `dir` whose name `matches`.
fn files_named(dir: &std::path::Path, matches: impl Fn(&str) -> bool) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| matches(&e.as_ref().unwrap().file_name().to_string_lossy()))
        .count()
}

/// Regression: blobs were written at the file system root, not the lake's folder.
#[tokio::test]
async fn blobs_land_inside_the_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().to_string_lossy()).await.unwrap();
    lake.blobs()
        .put(
            &Path::from("raw/dev/upload"),
            PutPayload::from_static(b"bytes"),
        )
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("raw/dev/upload")).unwrap(),
        b"bytes"
    );
}

#[tokio::test]
async fn committing_an_upload_twice_adds_nothing_even_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().to_string_lossy().into_owned();
    let id = UploadId::new_random();
    {
        let lake = Lake::open(&location).await.unwrap();
        let out = lake
            .commit_upload(record(id, 1, "aa"), &points(5), &[])
            .await
            .unwrap();
        assert!(matches!(out, CommitOutcome::Committed(_)));
        let again = lake
            .commit_upload(record(id, 1, "aa"), &points(5), &[])
            .await
            .unwrap();
        assert!(matches!(again, CommitOutcome::AlreadyStored(_)));
    }
    // A new process sees what was stored and still adds nothing.
    let lake = Lake::open(&location).await.unwrap();
    let again = lake
        .commit_upload(record(id, 1, "aa"), &points(5), &[])
        .await
        .unwrap();
    assert!(matches!(again, CommitOutcome::AlreadyStored(_)));
    assert_eq!(count(&lake, "SELECT count(*) FROM gnss").await, 5);
    assert_eq!(count(&lake, "SELECT count(*) FROM uploads").await, 1);
}

#[tokio::test]
async fn the_same_bytes_from_another_device_are_a_duplicate_without_rows() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().to_string_lossy()).await.unwrap();
    lake.commit_upload(record(UploadId::new_random(), 1, "bb"), &points(3), &[])
        .await
        .unwrap();
    let out = lake
        .commit_upload(record(UploadId::new_random(), 2, "bb"), &points(3), &[])
        .await
        .unwrap();
    let CommitOutcome::Committed(stored) = out else {
        panic!("{out:?}")
    };
    assert_eq!(stored.status, UploadStatus::Duplicate);
    assert_eq!(count(&lake, "SELECT count(*) FROM gnss").await, 3);
}

#[tokio::test]
async fn malformed_sql_is_an_error_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().to_string_lossy()).await.unwrap();
    let err = lake.query("SELEC 1").await.unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    assert!(chain.contains("SELEC"), "{chain}");
}

/// Issue 15: whether an upload's rows were in was known from memory only,
/// so a second node (or a commit whose caller was cancelled before noting
/// it) appended them again. The table's own transaction log says now.
#[tokio::test]
async fn a_node_that_did_not_see_a_commit_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_string_lossy().to_string();
    let first = Lake::open(&root).await.unwrap();
    // Opened before the commit: its memory knows nothing of it.
    let second = Lake::open(&root).await.unwrap();
    let id = UploadId::new_random();
    let sha = "b".repeat(64);
    let fixes = points(5);
    let out = first
        .commit_upload(record(id, 1, &sha), &fixes, &[])
        .await
        .unwrap();
    assert!(matches!(out, CommitOutcome::Committed(_)));
    let again = second
        .commit_upload(record(id, 1, &sha), &fixes, &[])
        .await
        .unwrap();
    assert!(
        matches!(again, CommitOutcome::AlreadyStored(_)),
        "{again:?}"
    );
    let fresh = Lake::open(&root).await.unwrap();
    assert_eq!(count(&fresh, "SELECT count(*) FROM gnss").await, 5);
    assert_eq!(count(&fresh, "SELECT count(*) FROM uploads").await, 1);
}

/// Issue 15: a commit file cut by a power loss made its table unopenable.
/// The truncated last commit is set aside at open, and the table opens at
/// the version before it with everything acknowledged before.
#[tokio::test]
async fn a_truncated_last_commit_is_set_aside_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_string_lossy().to_string();
    let lake = Lake::open(&root).await.unwrap();
    let id = UploadId::new_random();
    lake.commit_upload(record(id, 1, &"c".repeat(64)), &points(3), &[])
        .await
        .unwrap();
    drop(lake);
    let log = dir.path().join("tables/uploads/_delta_log");
    let last = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .max()
        .unwrap();
    let whole = std::fs::read(&last).unwrap();
    // The next commit, cut halfway.
    let next = last.with_file_name(format!(
        "{:020}.json",
        last.file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            + 1
    ));
    std::fs::write(&next, &whole[..whole.len() / 2]).unwrap();
    let lake = Lake::open(&root).await.unwrap();
    assert_eq!(count(&lake, "SELECT count(*) FROM uploads").await, 1);
    assert!(!next.exists());
    assert!(next.with_extension("json.truncated").exists());
}

/// Issue 16: uploads finishing at the same moment share their commits (one
/// per table per group), and still land exactly once each; the same bytes
/// from two devices in one group make one accepted upload and one
/// duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_finishing_together_share_commits_and_land_once() {
    let dir = tempfile::tempdir().unwrap();
    let lake = std::sync::Arc::new(Lake::open(&dir.path().to_string_lossy()).await.unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40u8 {
        let lake = std::sync::Arc::clone(&lake);
        tasks.spawn(async move {
            let sha = if i < 2 {
                "d".repeat(64)
            } else {
                format!("{i:064x}")
            };
            lake.commit_upload(record(UploadId::new_random(), i, &sha), &points(5), &[])
                .await
                .unwrap()
        });
    }
    let mut statuses = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let CommitOutcome::Committed(stored) = done.unwrap() else {
            panic!("every upload is new")
        };
        statuses.push(stored.status);
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == UploadStatus::Duplicate)
            .count(),
        1
    );
    assert_eq!(count(&lake, "SELECT count(*) FROM uploads").await, 40);
    assert_eq!(count(&lake, "SELECT count(*) FROM gnss").await, 39 * 5);
    let commits = files_named(&dir.path().join("tables/gnss/_delta_log"), |n| {
        n.ends_with(".json")
    });
    assert!(commits < 39, "{commits} commits for 39 uploads' fixes");
}

/// Uploads arriving in a stream, so one group is looked up while the one
/// before it is written: the same bytes from two devices are still one
/// accepted upload and one duplicate, and an upload sent twice is stored
/// once, wherever the copies fall.
#[tokio::test]
async fn copies_split_across_overlapping_groups_are_still_found() {
    let dir = tempfile::tempdir().unwrap();
    let lake = std::sync::Arc::new(Lake::open(&dir.path().to_string_lossy()).await.unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    let contents = 60usize;
    for n in 0..contents {
        let id = UploadId::new_random();
        // The original, the same upload again, and its bytes from another
        // device, a few milliseconds apart.
        for (copy, (id, device)) in [(id, 1u8), (id, 1), (UploadId::new_random(), 2)]
            .into_iter()
            .enumerate()
        {
            let lake = std::sync::Arc::clone(&lake);
            let delay = std::time::Duration::from_millis((n * 3 + copy * 7) as u64);
            tasks.spawn(async move {
                tokio::time::sleep(delay).await;
                lake.commit_upload(record(id, device, &sha(n)), &points(3), &[])
                    .await
                    .unwrap()
            });
        }
    }
    let mut committed = 0;
    while let Some(done) = tasks.join_next().await {
        if let CommitOutcome::Committed(_) = done.unwrap() {
            committed += 1;
        }
    }
    assert_eq!(
        committed,
        2 * contents,
        "each content: one original, one copy"
    );
    let per_status = |status: &str| {
        format!("SELECT count(DISTINCT sha256) FROM uploads WHERE status = '{status}'")
    };
    assert_eq!(count(&lake, &per_status("accepted")).await, contents as i64);
    assert_eq!(
        count(&lake, &per_status("duplicate")).await,
        contents as i64
    );
    assert_eq!(
        count(&lake, "SELECT count(*) FROM uploads").await,
        2 * contents as i64
    );
    assert_eq!(
        count(&lake, "SELECT count(*) FROM gnss").await,
        3 * contents as i64
    );
}

/// Issue 16: commits write no checkpoint inside the request; maintenance
/// compacts the small files and writes the checkpoint afterwards, and the
/// table reads the same through both.
#[tokio::test]
async fn maintenance_checkpoints_and_compacts_off_the_commit_path() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().to_string_lossy()).await.unwrap();
    for i in 0..40u8 {
        lake.commit_upload(
            record(UploadId::new_random(), i, &format!("{i:064x}")),
            &points(3),
            &[],
        )
        .await
        .unwrap();
    }
    let log = dir.path().join("tables/gnss/_delta_log");
    let checkpoints = || files_named(&log, |n| n.contains(".checkpoint."));
    assert_eq!(checkpoints(), 0, "no checkpoint on the commit path");
    let policy = hexroad_lake::Maintenance {
        checkpoint_every: 10,
        ..Default::default()
    };
    let checkpointed = |done: Vec<hexroad_lake::Maintained>| -> Vec<hexroad_lake::TableName> {
        done.into_iter()
            .filter(|m| m.checkpointed)
            .map(|m| m.table)
            .collect()
    };
    let done = checkpointed(lake.maintain(&policy).await.unwrap());
    assert!(done.contains(&hexroad_lake::TableName::Gnss), "{done:?}");
    assert_eq!(checkpoints(), 1);
    assert!(
        checkpointed(lake.maintain(&policy).await.unwrap()).is_empty(),
        "nothing new"
    );
    let reopened = Lake::open(&dir.path().to_string_lossy()).await.unwrap();
    assert_eq!(count(&reopened, "SELECT count(*) FROM gnss").await, 120);
    let operations: Vec<String> = std::fs::read_dir(&log)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .filter(|text| text.contains("\"OPTIMIZE\""))
        .collect();
    assert_eq!(
        operations.len(),
        1,
        "the 40 small files were compacted once"
    );
    let files = reopened
        .query("SELECT count(DISTINCT upload_id) AS n FROM gnss")
        .await
        .unwrap();
    assert_eq!(files.num_rows(), 1);
}

/// Issue 16: `File not found: _delta_log/…json`, once seen under
/// concurrent appends. A process whose handle on a table stayed at an old
/// version while another process committed, checkpointed and cleaned the
/// log past it could not follow the log again: the probe for its next
/// commit found nothing and called it current (its reads stayed stale),
/// and delta-rs's update failed on the first removed commit, on every
/// call. The stress test brought the error back with a short retention.
/// Such a handle is now read afresh from the checkpoint.
#[tokio::test]
async fn a_handle_behind_a_cleaned_log_reads_the_table_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_string_lossy().to_string();
    let behind = Lake::open(&root).await.unwrap();
    assert_eq!(count(&behind, "SELECT count(*) FROM gnss").await, 0);
    let writer = Lake::open(&root).await.unwrap();
    for i in 0..3u8 {
        writer
            .commit_upload(
                record(UploadId::new_random(), i, &format!("{i:064x}")),
                &points(4),
                &[],
            )
            .await
            .unwrap();
    }
    writer
        .maintain(&hexroad_lake::Maintenance {
            checkpoint_every: 1,
            retention: std::time::Duration::ZERO,
            ..Default::default()
        })
        .await
        .unwrap();
    let log = dir.path().join("tables/gnss/_delta_log");
    assert_eq!(
        files_named(&log, |n| n.ends_with(".json") && n.starts_with("0000")),
        1,
        "only the checkpointed commit is left"
    );
    // Another process's cleanup is noticed at the next look for a checkpoint.
    tokio::time::sleep(hexroad_lake::CHECKPOINT_LOOK).await;
    assert_eq!(count(&behind, "SELECT count(*) FROM gnss").await, 12);
    let more = behind
        .commit_upload(
            record(UploadId::new_random(), 9, &"9".repeat(64)),
            &points(4),
            &[],
        )
        .await
        .unwrap();
    assert!(matches!(more, CommitOutcome::Committed(_)), "{more:?}");
    assert_eq!(count(&writer, "SELECT count(*) FROM gnss").await, 16);
}

/// Issue 16: compaction bin-packed files in arrival order, so every file
/// of `gnss` (and `frames`) held drives from all over the map and a tile's
/// area filter skipped none of its row groups. Those two tables are now
/// compacted into rows sorted by H3 cell, in small row groups, with every
/// row kept.
#[tokio::test]
async fn compaction_sorts_the_map_tables_by_cell() {
    use hexroad_lake::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().to_string_lossy()).await.unwrap();
    // Drives in six places, arriving north to south and back.
    for (i, place) in [5u8, 0, 3, 1, 4, 2].into_iter().enumerate() {
        let fixes: Vec<GnssPoint> = points(40)
            .into_iter()
            .map(|p| GnssPoint {
                lat: p.lat + f64::from(place) * 0.05,
                lon: p.lon - f64::from(place) * 0.07,
                ..p
            })
            .collect();
        lake.commit_upload(
            record(UploadId::new_random(), i as u8, &format!("{i:064x}")),
            &fixes,
            &[],
        )
        .await
        .unwrap();
    }
    let summary = "SELECT count(*) AS n, sum(cell % 1000003) AS c, \
                   sum(CAST(lat * 1e6 AS BIGINT)) AS la, sum(CAST(lon * 1e6 AS BIGINT)) AS lo, \
                   count(DISTINCT upload_id) AS u FROM gnss";
    let before = lake.query(summary).await.unwrap().batches;
    assert_eq!(
        lake.data_files(hexroad_lake::TableName::Gnss)
            .await
            .unwrap(),
        6
    );
    lake.maintain(&hexroad_lake::Maintenance {
        compact_over_files: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        lake.data_files(hexroad_lake::TableName::Gnss)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        lake.query(summary).await.unwrap().batches,
        before,
        "every row kept"
    );
    let uris = lake
        .data_file_uris(hexroad_lake::TableName::Gnss)
        .await
        .unwrap();
    let path = url::Url::parse(&uris[0])
        .ok()
        .and_then(|u| u.to_file_path().ok())
        .unwrap_or_else(|| uris[0].clone().into());
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let mut cells = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        let column = batch.column_by_name("cell").unwrap();
        let column = column
            .as_any()
            .downcast_ref::<hexroad_lake::arrow::array::Int64Array>()
            .unwrap();
        cells.extend(column.values().iter().copied());
    }
    assert_eq!(cells.len(), 240);
    assert!(cells.windows(2).all(|w| w[0] <= w[1]), "rows in cell order");
}

/// The vision worker's watch follows the commits: a new video appears, a
/// final verdict takes it off, a failed one leaves it, a compaction (no new
/// rows) brings nothing back, and the answer is what a full read gives.
#[tokio::test]
async fn the_pending_watch_follows_the_commits_and_agrees_with_a_full_read() {
    use hexroad_lake::{ProcessingRecord, ProcessingStatus, TableName, schema};
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().to_string_lossy()).await.unwrap();
    let video = |n: u8| UploadRecord {
        kind: UploadKind::Video,
        format: "mp4".into(),
        ..record(UploadId::new_random(), n, &format!("{n:064x}"))
    };
    let verdict = |id: UploadId, status: ProcessingStatus| ProcessingRecord {
        upload_id: id,
        status,
        reason: None,
        frames_published: 0,
        frames_deduplicated: 0,
        worker: "test".into(),
        at: Utc::now(),
    };
    let (a, b, c) = (video(1), video(2), video(3));
    lake.commit_upload(a.clone(), &[], &[]).await.unwrap();
    let mut watch = lake.watch_pending().await.unwrap();
    let ids = |p: Vec<hexroad_lake::PendingUpload>| -> Vec<UploadId> {
        let mut ids: Vec<UploadId> = p.into_iter().map(|p| p.upload_id).collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<UploadId>| {
        v.sort();
        v
    };
    assert_eq!(
        ids(lake.poll_pending(&mut watch).await.unwrap()),
        vec![a.upload_id]
    );

    lake.commit_upload(b.clone(), &[], &[]).await.unwrap();
    lake.commit_upload(record(UploadId::new_random(), 4, "ee"), &points(3), &[])
        .await
        .unwrap();
    for (id, status) in [
        (a.upload_id, ProcessingStatus::Processed),
        (b.upload_id, ProcessingStatus::Failed),
    ] {
        let row = schema::processing_batch(&verdict(id, status)).unwrap();
        lake.append_rows(TableName::Processing, row).await.unwrap();
    }
    assert_eq!(
        ids(lake.poll_pending(&mut watch).await.unwrap()),
        vec![b.upload_id],
        "a processed video leaves, a failed one stays, a track is not vision's"
    );
    // A verdict committed before its upload's row is read (another worker
    // was quicker) keeps the row from being taken up.
    lake.commit_upload(c.clone(), &[], &[]).await.unwrap();
    let row = schema::processing_batch(&verdict(c.upload_id, ProcessingStatus::Rejected)).unwrap();
    lake.append_rows(TableName::Processing, row).await.unwrap();
    lake.maintain(&hexroad_lake::Maintenance {
        compact_over_files: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    let followed = ids(lake.poll_pending(&mut watch).await.unwrap());
    assert_eq!(
        followed,
        vec![b.upload_id],
        "compaction brought nothing back"
    );
    let full = sorted(
        lake.pending_uploads()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.upload_id)
            .collect(),
    );
    assert_eq!(followed, full, "the watch agrees with a full read");
}
