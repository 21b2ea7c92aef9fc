//! The lake on a real S3-compatible server (SeaweedFS, signed requests):
//! commits, lookups, maintenance and reopening work as on a local folder,
//! two writers on one location lose nothing, an independent reader sees
//! the same tables, and a store that ignores create-if-absent is refused.

use hexroad_lake::object_store::path::Path;
use hexroad_lake::object_store::{ObjectStoreExt as _, PutPayload};
use hexroad_lake::{CommitOutcome, Lake, Maintenance, StorageSettings};
use hexroad_wire::UploadId;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[path = "support/records.rs"]
mod records;
use records::{count, points, record, sha};
#[path = "support/seaweed.rs"]
mod seaweed;
use seaweed::Seaweed;

#[tokio::test]
async fn a_lake_on_s3_commits_looks_up_maintains_and_reopens() {
    let server = Seaweed::start().await;
    let location = server.location();
    let settings = server.settings();
    let lake = Lake::open_with(&location, &settings).await.unwrap();
    let first = UploadId::new_random();
    let CommitOutcome::Committed(_) = lake
        .commit_upload(record(first, 1, &sha(1)), &points(30), &[])
        .await
        .unwrap()
    else {
        panic!("a new upload is committed")
    };
    for n in 2..6 {
        lake.commit_upload(record(UploadId::new_random(), 1, &sha(n)), &points(10), &[])
            .await
            .unwrap();
    }
    // Blobs live under the lake's own prefix in the bucket.
    lake.blobs()
        .put(
            &Path::from("raw/dev/blob"),
            PutPayload::from_static(b"bytes"),
        )
        .await
        .unwrap();
    let key = Path::from(format!(
        "{}/raw/dev/blob",
        location.trim_start_matches("s3://lake/")
    ));
    let stored = server
        .store()
        .get(&key)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(stored.as_ref(), b"bytes");

    lake.maintain(&Maintenance {
        checkpoint_every: 1,
        compact_over_files: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(count(&lake, "SELECT count(*) FROM gnss").await, 70);
    drop(lake);

    // Reopened with room for no upload in memory: the first is found in
    // the table on S3, by id and by content.
    let lake = Lake::open_with(&location, &settings)
        .await
        .unwrap()
        .with_recent_uploads(1);
    assert!(matches!(
        lake.commit_upload(record(first, 1, &sha(1)), &points(30), &[])
            .await
            .unwrap(),
        CommitOutcome::AlreadyStored(_)
    ));
    assert!(matches!(
        lake.commit_upload(record(UploadId::new_random(), 1, &sha(1)), &points(30), &[])
            .await
            .unwrap(),
        CommitOutcome::AlreadyStored(_)
    ));
    assert_eq!(count(&lake, "SELECT count(*) FROM uploads").await, 5);
    assert_eq!(count(&lake, "SELECT count(*) FROM gnss").await, 70);
    assert_eq!(
        lake.upload_summary(first).await.unwrap().unwrap().sha256,
        sha(1)
    );

    // An independent reader (delta-rs's Python package) sees the same rows
    // (and leaves without tearing down its runtime, which can abort at exit).
    let out = std::process::Command::new(seaweed::python())
        .args([
            "-c",
            "import sys, deltalake\n\
             opts = dict(zip(sys.argv[2::2], sys.argv[3::2]))\n\
             t = deltalake.DeltaTable(sys.argv[1] + '/tables/gnss', storage_options=opts)\n\
             print(t.to_pyarrow_table().num_rows, flush=True)\n\
             import os; os._exit(0)",
            &location,
            "AWS_ENDPOINT_URL",
            &server.endpoint,
            "AWS_ACCESS_KEY_ID",
            seaweed::ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY",
            seaweed::SECRET_KEY,
            "AWS_REGION",
            "us-east-1",
            "AWS_ALLOW_HTTP",
            "true",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "70");
}

/// Two processes' lakes on one location, each through its own S3 gateway
/// on one filer, commit at once: Delta's optimistic concurrency (a
/// create-if-absent PUT per version, atomic across the gateways) keeps
/// every commit.
#[tokio::test]
async fn two_writers_through_two_gateways_lose_no_commit() {
    let mut server = Seaweed::start().await;
    let location = server.location();
    let settings = server.settings();
    let other_gateway = server.second_gateway().await;
    let a = std::sync::Arc::new(Lake::open_with(&location, &settings).await.unwrap());
    let b = std::sync::Arc::new(Lake::open_with(&location, &other_gateway).await.unwrap());
    let mut commits = tokio::task::JoinSet::new();
    for n in 0..12 {
        let lake = std::sync::Arc::clone(if n % 2 == 0 { &a } else { &b });
        commits.spawn(async move {
            lake.commit_upload(
                record(UploadId::new_random(), 2, &sha(100 + n)),
                &points(5),
                &[],
            )
            .await
        });
    }
    while let Some(done) = commits.join_next().await {
        assert!(matches!(
            done.unwrap().unwrap(),
            CommitOutcome::Committed(_)
        ));
    }
    let fresh = Lake::open_with(&location, &settings).await.unwrap();
    assert_eq!(count(&fresh, "SELECT count(*) FROM uploads").await, 12);
    assert_eq!(count(&fresh, "SELECT count(*) FROM gnss").await, 60);
}

/// Forwards HTTP/1.1 requests to `upstream` without their `If-None-Match`
/// header, one request per connection: a store that ignores it.
async fn header_dropping_proxy(upstream: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let mut lines: Vec<&str> = text
                    .split("\r\n")
                    .filter(|line| {
                        let line = line.to_ascii_lowercase();
                        !line.starts_with("if-none-match:") && !line.starts_with("connection:")
                    })
                    .collect();
                lines.insert(1, "Connection: close");
                let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                if server
                    .write_all(lines.join("\r\n").as_bytes())
                    .await
                    .is_ok()
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn a_store_that_ignores_create_if_absent_is_refused() {
    let server = Seaweed::start_with(false).await;
    let anonymous = |endpoint: String| StorageSettings {
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        allow_http: Some(true),
        skip_signature: Some(true),
        ..Default::default()
    };
    // The server itself honours the header...
    let location = server.location();
    Lake::open_with(&location, &anonymous(server.endpoint.clone()))
        .await
        .unwrap();
    // ...the same server behind a proxy that drops it is refused, and
    // nothing is created there.
    let proxy = header_dropping_proxy(server.endpoint.trim_start_matches("http://").into()).await;
    let other = server.location();
    let err = Lake::open_with(&other, &anonymous(proxy))
        .await
        .expect_err("a store without create-if-absent is refused");
    let message = err.to_string();
    assert!(
        message.contains("If-None-Match") && message.contains(&other),
        "{message}"
    );
    let prefix = Path::from(other.trim_start_matches("s3://lake/"));
    use futures::TryStreamExt as _;
    use hexroad_lake::object_store::ObjectStore as _;
    let left: Vec<_> = server
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}
