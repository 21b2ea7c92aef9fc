//! The ingest API over a loopback socket, against a real lake in a temp dir.
//! Each bad input gets its status and a JSON body naming the problem, and
//! nothing already stored is touched.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{Duration, Utc};
use hexroad_ingest::IngestConfig;
use hexroad_wire::track;
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};
use support::*;

#[tokio::test]
async fn a_registered_device_uploads_a_track_into_the_tables() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(1);
    assert_eq!(register(&s, &d).await.status, StatusCode::CREATED);
    assert_eq!(
        register(&s, &d).await.status,
        StatusCode::OK,
        "registering twice is idempotent"
    );
    let data = gpx(60.17, 24.94, Utc::now() - Duration::hours(1));
    let r = upload(&s, &d, "gnss", "gpx", &data).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.json);
    assert_eq!(r.headers["hexroad-upload-status"], "accepted");
    assert_eq!(count(&s, "SELECT count(*) FROM gnss").await, 20);
    assert_eq!(
        count(
            &s,
            "SELECT count(*) FROM gnss WHERE arrow_typeof(cell) = 'UInt64'"
        )
        .await,
        20
    );
    assert_eq!(
        count(&s, "SELECT count(*) FROM uploads WHERE status = 'accepted'").await,
        1
    );

    // The same bytes again from the same device: acknowledged, nothing added.
    let again = upload(&s, &d, "gnss", "gpx", &data).await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    assert_eq!(count(&s, "SELECT count(*) FROM gnss").await, 20);
    assert_eq!(count(&s, "SELECT count(*) FROM uploads").await, 1);

    // The same bytes from another device: stored as a duplicate, no new rows.
    let other = Device::new(2);
    register(&s, &other).await;
    let dup = upload(&s, &other, "gnss", "gpx", &data).await;
    assert_eq!(dup.headers["hexroad-upload-status"], "duplicate");
    assert_eq!(count(&s, "SELECT count(*) FROM gnss").await, 20);
    assert_eq!(
        count(
            &s,
            "SELECT count(*) FROM uploads WHERE status = 'duplicate'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_resumed_upload_sends_only_the_missing_bytes() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(3);
    register(&s, &d).await;
    let data = gpx(60.17, 24.94, Utc::now() - Duration::hours(2));
    let created = create(&s, &d, data.len(), metadata("gnss", "nmea", &data)).await;
    // (declared nmea: must be gpx for this data; checked below after resume)
    let location = created.headers["location"].to_str().unwrap().to_owned();
    let half = data.len() / 2;
    let first = patch(&s, &d, &location, 0, &data[..half]).await;
    assert_eq!(first.status, StatusCode::NO_CONTENT);
    assert_eq!(first.headers["upload-offset"], half.to_string().as_str());
    let head = signed(&s, &d, Method::HEAD, &location, &[], Vec::new()).await;
    assert_eq!(head.headers["upload-offset"], half.to_string().as_str());
    // A PATCH at the wrong offset is a conflict, and changes nothing.
    assert_error(
        &patch(&s, &d, &location, 0, &data[..half]).await,
        StatusCode::CONFLICT,
        "offset_mismatch",
    );
    let rest = patch(&s, &d, &location, half as u64, &data[half..]).await;
    // The bytes are a GPX document declared as NMEA: refused by validation.
    assert_error(&rest, StatusCode::UNPROCESSABLE_ENTITY, "bad_track");
    let head = signed(&s, &d, Method::HEAD, &location, &[], Vec::new()).await;
    assert_eq!(head.headers["hexroad-upload-status"], "rejected");
}

#[tokio::test]
async fn unsigned_requests_are_refused() {
    let s = start(IngestConfig::default()).await;
    let r = send(&s.base, Method::POST, "/v1/uploads", &[], Vec::new()).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unsigned");
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(4);
    register(&s, &d).await;
    let covered = [
        ("upload-length", "10".to_owned()),
        ("upload-metadata", metadata("gnss", "gpx", b"x")),
    ];
    let mut headers = signed_headers(&s, &d, "POST", "/v1/uploads", &covered, &nonce());
    // Tamper with a covered header after signing.
    headers[0].1 = "11".into();
    let r = send(&s.base, Method::POST, "/v1/uploads", &headers, Vec::new()).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "bad_signature");
}

#[tokio::test]
async fn a_replayed_request_is_refused() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(5);
    register(&s, &d).await;
    let data = gpx(60.17, 24.94, Utc::now() - Duration::hours(1));
    let covered = [
        ("upload-length", data.len().to_string()),
        ("upload-metadata", metadata("gnss", "gpx", &data)),
    ];
    let headers = signed_headers(&s, &d, "POST", "/v1/uploads", &covered, "the-same-nonce");
    let first = send(&s.base, Method::POST, "/v1/uploads", &headers, Vec::new()).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let replay = send(&s.base, Method::POST, "/v1/uploads", &headers, Vec::new()).await;
    assert_error(&replay, StatusCode::UNAUTHORIZED, "replayed");
}

#[tokio::test]
async fn an_unknown_device_is_forbidden() {
    let s = start(IngestConfig::default()).await;
    let stranger = Device::new(6);
    let r = create(&s, &stranger, 10, metadata("gnss", "gpx", b"x")).await;
    assert_error(&r, StatusCode::FORBIDDEN, "unknown_device");
}

#[tokio::test]
async fn a_revoked_device_is_forbidden() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(7);
    register(&s, &d).await;
    let path = format!("/v1/devices/{}", d.id);
    assert_eq!(
        signed(&s, &d, Method::DELETE, &path, &[], Vec::new())
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_error(
        &create(&s, &d, 10, metadata("gnss", "gpx", b"x")).await,
        StatusCode::FORBIDDEN,
        "revoked_device",
    );
}

#[tokio::test]
async fn a_sha256_mismatch_publishes_nothing() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(8);
    register(&s, &d).await;
    let good = gpx(60.17, 24.94, Utc::now() - Duration::hours(1));
    assert_eq!(
        upload(&s, &d, "gnss", "gpx", &good).await.status,
        StatusCode::NO_CONTENT
    );
    let other = gpx(60.18, 24.95, Utc::now() - Duration::hours(1));
    let lying = metadata("gnss", "gpx", b"something else entirely");
    let r = upload_declaring(&s, &d, "gnss", "gpx", &other, lying).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "sha256_mismatch");
    // Nothing of it was published; what was stored before is intact.
    assert_eq!(count(&s, "SELECT count(*) FROM gnss").await, 20);
    assert_eq!(
        count(
            &s,
            "SELECT count(*) FROM uploads WHERE status = 'rejected' AND object_key = ''"
        )
        .await,
        1
    );
    let raw = s
        .lake
        .blobs()
        .list_with_delimiter(Some(&format!("raw/{}", d.id).as_str().into()))
        .await
        .unwrap();
    assert_eq!(raw.objects.len(), 1, "only the good upload has a raw blob");
}

#[tokio::test]
async fn a_corrupt_mp4_is_refused() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(9);
    register(&s, &d).await;
    let mut junk = b"\x00\x00\x00\x18ftypmp42".to_vec();
    junk.extend(std::iter::repeat_n(0xAB, 4096));
    let r = upload(&s, &d, "video", "mp4", &junk).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "corrupt_video");
    assert_eq!(
        count(&s, "SELECT count(*) FROM uploads WHERE status = 'rejected'").await,
        1
    );
}

/// Ten frames of test video through `encoder ! muxer`, as bytes.
fn encoded(encoder: &str, muxer: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip");
    let line = format!(
        "videotestsrc num-buffers=10 ! video/x-raw,width=160,height=120,framerate=10/1 ! \
         videoconvert ! {encoder} ! {muxer} ! filesink location={}",
        path.display()
    );
    let status = std::process::Command::new("gst-launch-1.0")
        .arg("-q")
        .args(line.split_whitespace())
        .status()
        .expect("gst-launch-1.0 (gstreamer1.0-tools, installed by scripts/setup)");
    assert!(status.success(), "{line}");
    std::fs::read(&path).unwrap()
}

/// Issue 14: ingest probed video with GStreamer's discoverer, which picks a
/// demuxer and decoders by the file's content. The probe is pinned to
/// qtdemux and h264parse: another container is refused from its first box,
/// another codec by its caps, before any of it is decoded.
#[tokio::test]
async fn only_h264_in_mp4_is_probed() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(11);
    register(&s, &d).await;
    let mkv = encoded("x264enc ! h264parse", "matroskamux");
    let r = upload(&s, &d, "video", "mp4", &mkv).await;
    assert_error(
        &r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unsupported_container",
    );
    let mpeg4 = encoded("avenc_mpeg4", "mp4mux");
    let r = upload(&s, &d, "video", "mp4", &mpeg4).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "unsupported_codec");
    let h264 = encoded("x264enc ! h264parse", "mp4mux");
    let r = upload(&s, &d, "video", "mp4", &h264).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.json);
}

#[tokio::test]
async fn a_real_mp4_is_accepted_and_a_truncated_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.mp4");
    let status = std::process::Command::new("gst-launch-1.0")
        .args([
            "-q",
            "videotestsrc",
            "num-buffers=20",
            "!",
            "video/x-raw,width=320,height=240,framerate=10/1",
            "!",
            "videoconvert",
            "!",
            "x264enc",
            "!",
            "h264parse",
            "!",
            "mp4mux",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", path.display()))
        .status()
        .expect("gst-launch-1.0 (gstreamer1.0-tools, installed by scripts/setup)");
    assert!(status.success());
    let mp4 = std::fs::read(&path).unwrap();
    let s = start(IngestConfig::default()).await;
    let d = Device::new(10);
    register(&s, &d).await;
    let ok = upload(&s, &d, "video", "mp4", &mp4).await;
    assert_eq!(ok.status, StatusCode::NO_CONTENT, "{:?}", ok.json);
    let media = s.lake.query("SELECT media FROM uploads").await.unwrap();
    let text =
        hexroad_lake::render_batches(&media.batches, hexroad_lake::OutputFormat::Csv).unwrap();
    assert!(text.contains("h264") && text.contains("320"), "{text}");
    let truncated = &mp4[..mp4.len() / 2];
    let r = upload(&s, &d, "video", "mp4", truncated).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.json);
}

#[tokio::test]
async fn gpx_at_null_island_is_refused() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(11);
    register(&s, &d).await;
    let data = track::write_gpx(
        &track_points(Utc::now() - Duration::hours(1), 0.0, 0.0, 1),
        "t",
    );
    let r = upload(&s, &d, "gnss", "gpx", data.as_bytes()).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "null_island");
    assert_eq!(count(&s, "SELECT count(*) FROM gnss").await, 0);
}

#[tokio::test]
async fn gpx_from_the_future_is_refused() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(12);
    register(&s, &d).await;
    let data = gpx(60.17, 24.94, Utc::now() + Duration::days(1));
    let r = upload(&s, &d, "gnss", "gpx", &data).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "future_timestamp");
}

#[tokio::test]
async fn unknown_telemetry_signals_are_refused() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(13);
    register(&s, &d).await;
    let t = (Utc::now() - Duration::hours(1)).to_rfc3339();
    let data = format!("{{\"ts\":\"{t}\",\"signal\":\"Vehicle.FluxCapacitor\",\"value\":1.21}}\n");
    let r = upload(&s, &d, "telemetry", "ndjson", data.as_bytes()).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "unknown_signal");
}

#[tokio::test]
async fn a_body_too_large_is_refused() {
    let s = start(IngestConfig {
        max_upload_bytes: 1000,
        ..IngestConfig::default()
    })
    .await;
    let d = Device::new(14);
    register(&s, &d).await;
    let r = create(&s, &d, 1001, metadata("gnss", "gpx", b"x")).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    // A PATCH running past Upload-Length is refused too.
    let created = create(&s, &d, 10, metadata("gnss", "gpx", b"0123456789")).await;
    let location = created.headers["location"].to_str().unwrap().to_owned();
    assert_error(
        &patch(&s, &d, &location, 0, b"0123456789AB").await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    );
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let s = start(IngestConfig {
        requests_per_second: 1.0,
        request_burst: 3.0,
        ..IngestConfig::default()
    })
    .await;
    let d = Device::new(15);
    register(&s, &d).await; // one token
    let mut last = None;
    for _ in 0..4 {
        last = Some(create(&s, &d, 10, metadata("gnss", "gpx", b"x")).await);
    }
    let r = last.unwrap();
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
}

#[tokio::test]
async fn a_checksum_mismatch_keeps_nothing() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(16);
    register(&s, &d).await;
    let created = create(&s, &d, 4, metadata("gnss", "gpx", b"abcd")).await;
    let location = created.headers["location"].to_str().unwrap().to_owned();
    let wrong = format!("sha256 {}", STANDARD.encode(Sha256::digest(b"zzzz")));
    let r = signed(
        &s,
        &d,
        Method::PATCH,
        &location,
        &[
            ("upload-offset", "0".into()),
            ("upload-checksum", wrong),
            ("content-type", "application/offset+octet-stream".into()),
        ],
        b"abcd".to_vec(),
    )
    .await;
    assert_error(&r, StatusCode::from_u16(460).unwrap(), "checksum_mismatch");
    let head = signed(&s, &d, Method::HEAD, &location, &[], Vec::new()).await;
    assert_eq!(head.headers["upload-offset"], "0");
}

#[tokio::test]
async fn openapi_metrics_and_health_are_served() {
    let s = start(IngestConfig::default()).await;
    let doc = send(&s.base, Method::GET, "/openapi.json", &[], Vec::new()).await;
    assert_eq!(doc.status, StatusCode::OK);
    // The whole document, so a change to the API a device maker reads shows
    // up in review (`INSTA_UPDATE=always` rewrites it).
    insta::assert_json_snapshot!("openapi", doc.json);
    for path in [
        "/v1/devices",
        "/v1/devices/{id}",
        "/v1/uploads",
        "/v1/uploads/{id}",
        "/healthz",
        "/metrics",
    ] {
        assert!(
            doc.json["paths"][path].is_object(),
            "{path} missing from openapi.json"
        );
    }
    let metrics = reqwest::get(format!("{}/metrics", s.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "hexroad_http_requests_total{method=\"GET\",route=\"/openapi.json\",status=\"200\"} 1"
        ),
        "{metrics}"
    );
    let health = reqwest::get(format!("{}/healthz", s.base)).await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

/// A frame bundle: `members` as regular files, then a track.
fn bundle(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.append_data(&mut h, name, *data).unwrap();
    }
    out.into_inner().unwrap()
}

/// A JPEG header declaring `w`×`h` pixels: a few dozen bytes.
fn jpeg_header(w: u16, h: u16) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08];
    j.extend(h.to_be_bytes());
    j.extend(w.to_be_bytes());
    j.extend([0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01]);
    j.extend([0xFF, 0xD9]);
    j
}

/// Issue 14, resolution bomb: a 23000×23000 JPEG is refused at ingest from
/// its header, before vision could allocate tens of GB decoding it.
#[tokio::test]
async fn a_resolution_bomb_is_refused_at_ingest() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(40);
    register(&s, &d).await;
    let start_at = Utc::now() - Duration::hours(1);
    let track = gpx(60.17, 24.94, start_at);
    let name = format!("{}.jpg", start_at.timestamp_millis());
    let bomb = jpeg_header(23000, 23000);
    let data = bundle(&[(&name, &bomb), ("track.gpx", &track)]);
    let r = upload(&s, &d, "frames", "tar", &data).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "too_large");
    assert!(r.json["message"].as_str().unwrap().contains("23000"));
    // The same bundle with an honest picture is accepted.
    let fine = jpeg_header(1280, 720);
    let data = bundle(&[(&name, &fine), ("track.gpx", &track)]);
    let r = upload(&s, &d, "frames", "tar", &data).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{:?}", r.json);
}

/// Issue 14, tar amplification: a GNU sparse member (2 KiB on the wire,
/// gigabytes when expanded) is refused from its header, unread.
#[tokio::test]
async fn a_sparse_tar_member_is_refused_unread() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(41);
    register(&s, &d).await;
    let mut out = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_path("1700000000000.jpg").unwrap();
    h.set_size(0);
    h.set_mode(0o644);
    h.set_cksum();
    out.append(&h, std::io::empty()).unwrap();
    let data = out.into_inner().unwrap();
    let r = upload(&s, &d, "frames", "tar", &data).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "bad_frames");
    // A member declaring more than the image limit is refused unread too.
    let mut out = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("1700000000000.jpg").unwrap();
    h.set_size(1 << 40);
    h.set_mode(0o644);
    h.set_cksum();
    out.append(&h, std::io::empty()).unwrap();
    let data = out.into_inner().unwrap();
    let r = upload(&s, &d, "frames", "tar", &data).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "too_large");
}

/// Issue 14: NMEA with a multi-byte character where digits belong answered
/// 500 and left the upload stuck; it is a 422 naming the line now.
#[tokio::test]
async fn nmea_with_a_multi_byte_character_is_refused_not_a_500() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(42);
    register(&s, &d).await;
    let body = "GPRMC,1é2345.00,A,6010.0000,N,02456.0000,E,0.0,0.0,011126,,";
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    let data = format!("${body}*{sum:02X}\n");
    let r = upload(&s, &d, "gnss", "nmea", data.as_bytes()).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "bad_track");
}

/// Issue 14: nonces of any size (200 KB was accepted) were held in memory
/// for the whole signature window. A nonce over 64 bytes is refused.
#[tokio::test]
async fn a_huge_nonce_is_refused() {
    let s = start(IngestConfig::default()).await;
    let d = Device::new(43);
    register(&s, &d).await;
    let data = gpx(60.17, 24.94, Utc::now() - Duration::hours(1));
    let covered = [
        ("upload-length", data.len().to_string()),
        ("upload-metadata", metadata("gnss", "gpx", &data)),
    ];
    let headers = signed_headers(&s, &d, "POST", "/v1/uploads", &covered, &"n".repeat(65));
    let r = send(&s.base, Method::POST, "/v1/uploads", &headers, Vec::new()).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "bad_signature");
    assert!(r.json["message"].as_str().unwrap().contains("64 bytes"));
}

/// Issue 14: `max_open_uploads` was checked and then reserved in two steps,
/// so 66 uploads were open at once under a limit of 64. Forty creations at
/// once under a limit of 8 open exactly 8.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_open_uploads_holds_under_concurrent_creation() {
    let s = start(IngestConfig {
        max_open_uploads: 8,
        requests_per_second: 10_000.0,
        request_burst: 10_000.0,
        ..IngestConfig::default()
    })
    .await;
    let d = Device::new(44);
    register(&s, &d).await;
    let data = gpx(60.17, 24.94, Utc::now() - Duration::hours(1));
    let creations = (0..40).map(|_| create(&s, &d, data.len(), metadata("gnss", "gpx", &data)));
    let replies = futures::future::join_all(creations).await;
    let created = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    let refused = replies
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((created, refused), (8, 32));
}

/// Issue 14: registration had no rate limit (25 fresh keys back-to-back, no
/// 429). Past the burst, new keys get 429 with Retry-After; a device that
/// is already registered still gets its 200.
#[tokio::test]
async fn registration_is_rate_limited() {
    let s = start(IngestConfig {
        registrations_per_second: 0.01,
        registration_burst: 3.0,
        ..IngestConfig::default()
    })
    .await;
    for seed in 50..53 {
        let r = register(&s, &Device::new(seed)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.json);
    }
    let r = register(&s, &Device::new(53)).await;
    assert_error(
        &r,
        StatusCode::TOO_MANY_REQUESTS,
        "registration_rate_limited",
    );
    assert!(r.headers.contains_key("retry-after"));
    let again = register(&s, &Device::new(50)).await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.json);
}
