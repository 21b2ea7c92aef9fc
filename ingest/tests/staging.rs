//! Issue 14: what strangers can make the service hold. Every unfinished
//! upload expires, is bounded by quotas and is removed with its device; a
//! stalled or cut chunk keeps nothing and wedges nothing; only committed
//! uploads keep raw objects; nonces and locks stay bounded; a signature is
//! good for one deployment only.

mod support;

use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use hexroad_ingest::IngestConfig;
use reqwest::{Method, StatusCode};
use support::*;

fn track() -> Vec<u8> {
    gpx(60.17, 24.94, Utc::now() - Duration::hours(1))
}

async fn created(s: &Server, d: &Device, data: &[u8]) -> (String, Reply) {
    let r = create(s, d, data.len(), metadata("gnss", "gpx", data)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    (r.headers["location"].to_str().unwrap().to_owned(), r)
}

/// Issue 14: `@authority` was not required, so a request signed for one
/// deployment replayed against another.
#[tokio::test]
async fn a_request_signed_for_another_host_is_refused() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(60);
    register(&s, &d).await;
    let data = track();
    let covered = [
        ("upload-length", data.len().to_string()),
        ("upload-metadata", metadata("gnss", "gpx", &data)),
    ];
    // Signed for staging.example, sent here with that Host.
    let mut headers: Vec<(String, String)> = covered
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.clone()))
        .collect();
    headers.extend(d.sign(
        ("POST", "staging.example", "/v1/uploads"),
        &covered,
        &nonce(),
    ));
    headers.push(("host".into(), "staging.example".into()));
    let r = send(&s.base, Method::POST, "/v1/uploads", &headers, Vec::new()).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "wrong_authority");
    assert!(r.json["message"].as_str().unwrap().contains(s.authority()));
}

/// Issue 14: a PATCH body that went silent held its upload forever: HEAD
/// and DELETE blocked behind it until restart. Now the chunk is dropped
/// after the idle limit and the device resumes from the offset HEAD gives.
#[tokio::test]
async fn a_silent_patch_releases_its_upload() {
    let s = start(IngestConfig {
        body_idle_timeout: StdDuration::from_millis(500),
        ..IngestConfig::default()
    })
    .await;
    let d = Device::new(61);
    register(&s, &d).await;
    let data = track();
    let (location, _) = created(&s, &d, &data).await;
    let _silent = partial_patch(&s, &d, &location, &data, data.len() / 2).await;
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    let head = head_within(&s, &d, &location).await;
    assert_eq!(head.status, StatusCode::OK, "{:?}", head.json);
    assert_eq!(head.headers["upload-offset"], "0");
    let done = patch(&s, &d, &location, 0, &data).await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{:?}", done.json);
    assert_eq!(done.headers["hexroad-upload-status"], "accepted");
}

/// Issue 14: after a cut, bytes that did not match the declared
/// `Upload-Checksum` were stored, and the upload was then rejected at the
/// end for good. Now a cut chunk keeps nothing, and a resend finishes.
#[tokio::test]
async fn a_cut_chunk_keeps_nothing_unverified() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(62);
    register(&s, &d).await;
    let data = track();
    let (location, _) = created(&s, &d, &data).await;
    // Half a body of other bytes than the checksum covers, then a cut.
    let mut garbled = data.clone();
    garbled
        .iter_mut()
        .take(data.len() / 2)
        .for_each(|b| *b = b'x');
    let mut stream = partial_patch(&s, &d, &location, &data, 0).await;
    {
        use tokio::io::AsyncWriteExt;
        stream.write_all(&garbled[..data.len() / 2]).await.unwrap();
        stream.flush().await.unwrap();
    }
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    drop(stream);
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    let head = head_within(&s, &d, &location).await;
    assert_eq!(
        head.headers["upload-offset"], "0",
        "unverified bytes were kept"
    );
    let done = patch(&s, &d, &location, 0, &data).await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{:?}", done.json);
    assert_eq!(done.headers["hexroad-upload-status"], "accepted");
}

/// Issue 14: nothing bounded the bytes unfinished uploads held (64 × 4 GiB
/// per device, any number of devices). Declared lengths are reserved
/// against a per-device and a global quota.
#[tokio::test]
async fn staged_bytes_are_bounded_per_device_and_in_all() {
    let s = start(IngestConfig {
        max_upload_bytes: 1000,
        max_device_staged_bytes: 1500,
        max_staged_bytes: 2500,
        ..IngestConfig::default()
    })
    .await;
    let meta = || metadata("gnss", "gpx", b"x");
    let (a, b) = (Device::new(63), Device::new(64));
    register(&s, &a).await;
    register(&s, &b).await;
    assert_eq!(
        create(&s, &a, 1000, meta()).await.status,
        StatusCode::CREATED
    );
    let r = create(&s, &a, 600, meta()).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "device_quota");
    assert_eq!(
        create(&s, &a, 500, meta()).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        create(&s, &b, 1000, meta()).await.status,
        StatusCode::CREATED
    );
    let r = create(&s, &b, 1, meta()).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "staging_full");
    assert!(r.headers.contains_key("retry-after"));
}

/// Issue 14: staging never expired. Creation states `Upload-Expires`; the
/// sweeper removes what is past it, and the reservation is released.
#[tokio::test]
async fn an_expired_upload_is_swept() {
    let s = start(IngestConfig {
        upload_expiry: StdDuration::from_secs(3600),
        ..IngestConfig::default()
    })
    .await;
    let d = Device::new(65);
    register(&s, &d).await;
    let data = track();
    let (location, reply) = created(&s, &d, &data).await;
    let expires = reply.headers["upload-expires"].to_str().unwrap();
    let when = chrono::DateTime::parse_from_rfc2822(expires).unwrap();
    let hour = (when.with_timezone(&Utc) - Utc::now()).num_seconds();
    assert!((3500..=3600).contains(&hour), "Upload-Expires {expires}");
    assert_eq!(s.state.sweep().await.unwrap().expired, 0);
    s.clock_ahead
        .store(3601, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(s.state.sweep().await.unwrap().expired, 1);
    s.clock_ahead.store(0, std::sync::atomic::Ordering::Relaxed);
    assert!(objects_under(&s, "staging").await.is_empty());
    // A HEAD answer has no body: the status says it.
    let head = head_within(&s, &d, &location).await;
    assert_eq!(head.status, StatusCode::NOT_FOUND);
}

/// Issue 14: a revoked device's staging could never be removed.
#[tokio::test]
async fn a_revoked_devices_staging_is_removed() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(66);
    register(&s, &d).await;
    let data = track();
    let (location, _) = created(&s, &d, &data).await;
    patch(&s, &d, &location, 0, &data[..data.len() / 2]).await;
    assert!(!objects_under(&s, "staging").await.is_empty());
    let path = format!("/v1/devices/{}", d.id);
    let r = signed(&s, &d, Method::DELETE, &path, &[], Vec::new()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.json);
    assert!(objects_under(&s, "staging").await.is_empty());
}

/// Issue 14: re-sending the same bytes as a new upload left an
/// unreferenced copy under `raw/`.
#[tokio::test]
async fn the_same_bytes_twice_keep_one_raw_object() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(67);
    register(&s, &d).await;
    let data = track();
    for _ in 0..2 {
        let r = upload(&s, &d, "gnss", "gpx", &data).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.json);
    }
    assert_eq!(objects_under(&s, "raw").await.len(), 1);
    assert!(objects_under(&s, "pending").await.is_empty());
}

/// Issue 14: a crash between storing an upload's raw object and its commit
/// left the object forever. Its pending marker lets the sweeper find it.
#[tokio::test]
async fn a_raw_object_without_a_commit_is_swept() {
    use hexroad_lake::object_store::{ObjectStoreExt, PutPayload, path::Path};
    let s = start(IngestConfig::default()).await;
    let d = Device::new(68);
    register(&s, &d).await;
    let kept = upload(&s, &d, "gnss", "gpx", &track()).await;
    let kept_id = kept.headers["hexroad-upload-id"].to_str().unwrap();
    // What a crash after storing the bytes and before the commit leaves.
    let lost = hexroad_wire::UploadId::new_random();
    let key = format!("raw/{}/{lost}", d.id);
    let store = s.lake.blobs();
    store
        .put(&Path::from(key.as_str()), PutPayload::from_static(b"bytes"))
        .await
        .unwrap();
    store
        .put(
            &Path::from(format!("pending/{lost}")),
            PutPayload::from(key.clone()),
        )
        .await
        .unwrap();
    // Not while it could still be an upload in flight.
    assert_eq!(s.state.sweep().await.unwrap().orphans, 0);
    s.clock_ahead
        .store(2 * 3600, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(s.state.sweep().await.unwrap().orphans, 1);
    let raw = objects_under(&s, "raw").await;
    assert_eq!(raw.len(), 1, "{raw:?}");
    assert!(raw[0].ends_with(kept_id), "{raw:?}");
    assert!(objects_under(&s, "pending").await.is_empty());
}

/// Issue 14: nonces of any count were held in memory. Past the cap, signed
/// requests are refused with 429 until old ones age out.
#[tokio::test]
async fn the_nonce_cache_is_bounded() {
    let s = start(IngestConfig {
        max_held_nonces: 3,
        ..IngestConfig::default()
    })
    .await;
    let d = Device::new(69);
    assert_eq!(register(&s, &d).await.status, StatusCode::CREATED);
    let data = track();
    for _ in 0..2 {
        created(&s, &d, &data).await;
    }
    let r = create(&s, &d, data.len(), metadata("gnss", "gpx", &data)).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "busy");
}

/// Issue 14: every upload id a client asked about kept a lock in memory.
#[tokio::test]
async fn unknown_upload_ids_hold_nothing() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(70);
    register(&s, &d).await;
    for _ in 0..50 {
        let id = hexroad_wire::UploadId::new_random();
        let r = head_within(&s, &d, &format!("/v1/uploads/{id}")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
    let metrics = reqwest::get(format!("{}/metrics", s.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("hexroad_upload_locks 0"), "{metrics}");
}

/// Issue 15: a device that hung up while its final PATCH was being
/// validated and committed cancelled the work midway, and its retry could
/// append rows twice. Finishing now runs to completion without the
/// connection: the upload is found finished, its rows there once.
#[tokio::test]
async fn a_device_hanging_up_during_finish_leaves_it_finished_once() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(71);
    register(&s, &d).await;
    let points = track_points(Utc::now() - Duration::hours(8), 60.17, 24.94, 20_000);
    let data = hexroad_wire::track::write_gpx(&points, "test").into_bytes();
    let (location, _) = created(&s, &d, &data).await;
    // The whole body goes; the device hangs up while the server finishes.
    let stream = partial_patch(&s, &d, &location, &data, data.len()).await;
    tokio::time::sleep(StdDuration::from_millis(30)).await;
    drop(stream);
    let started = std::time::Instant::now();
    loop {
        let head = head_within(&s, &d, &location).await;
        if head.headers.contains_key("hexroad-upload-status") {
            assert_eq!(head.headers["hexroad-upload-status"], "accepted");
            break;
        }
        assert!(
            started.elapsed() < StdDuration::from_secs(30),
            "the upload was left unfinished when its device hung up"
        );
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
    // The device's retry of the final PATCH is answered from what is stored.
    let retry = patch(&s, &d, &location, 0, &data).await;
    assert_eq!(retry.status, StatusCode::CONFLICT, "{:?}", retry.json);
    assert_eq!(count(&s, "SELECT count(*) FROM uploads").await, 1);
    assert_eq!(count(&s, "SELECT count(*) FROM gnss").await, 20_000);
}

/// Issue 15: registration was limited for the whole service only, so one
/// host (or one contributor id) could take all of it. Each source address
/// and each contributor has its own bucket too.
#[tokio::test]
async fn registration_is_limited_per_address_and_per_contributor() {
    let per_contributor = IngestConfig {
        contributor_registrations_per_second: 0.001,
        contributor_registration_burst: 2.0,
        ..IngestConfig::default()
    };
    let per_address = IngestConfig {
        address_registrations_per_second: 0.001,
        address_registration_burst: 2.0,
        ..IngestConfig::default()
    };
    for (config, first_seed, named) in [
        (per_contributor, 80, "contributor alice"),
        (per_address, 83, "from 127.0.0.1"),
    ] {
        let s = start(config).await;
        for seed in first_seed..first_seed + 2 {
            assert_eq!(
                register(&s, &Device::new(seed)).await.status,
                StatusCode::CREATED
            );
        }
        let r = register(&s, &Device::new(first_seed + 2)).await;
        assert_error(
            &r,
            StatusCode::TOO_MANY_REQUESTS,
            "registration_rate_limited",
        );
        assert!(
            r.json["message"].as_str().unwrap().contains(named),
            "{named}"
        );
    }
}
