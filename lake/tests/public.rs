//! Issue 15: what the public role may query. The public views carry no
//! device, upload or contributor id and nothing inside a privacy zone,
//! coarsen times and positions, and leave out coverage seen too rarely;
//! the raw tables answer the operator only.

use chrono::{TimeZone, Utc};
use hexroad_lake::schema::frames_batch;
use hexroad_lake::{
    FrameRecord, Lake, PrivacyZone, QueryLimits, Refusal, Role, TableName, render_batches,
};
use hexroad_wire::{ContributorId, DeviceId, FrameId, UploadId};

const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";
/// Alice's home, where she declared a zone.
const HOME: (f64, f64) = (60.1700, 24.9400);
const SHOP: (f64, f64) = (60.1800, 24.9600);
const FAR: (f64, f64) = (60.2000, 25.0000);

fn frame(n: u8, who: &str, at: (f64, f64)) -> FrameRecord {
    let device = DeviceId::from_public_key(&[if who == ALICE { 0xab } else { 0xcd }; 32]);
    let cell = u64::from(
        h3o::LatLng::new(at.0, at.1)
            .unwrap()
            .to_cell(h3o::Resolution::Fifteen),
    );
    FrameRecord {
        frame_id: FrameId::from_bytes([n; 16]),
        upload_id: UploadId(uuid::Uuid::from_u128(u128::from(n) % 3)),
        device_id: device,
        contributor_id: who.parse::<ContributorId>().unwrap(),
        ts: Utc
            .with_ymd_and_hms(2026, 6, 1, 8, 17, u32::from(n))
            .unwrap(),
        lat: at.0 + f64::from(n) * 1e-7,
        lon: at.1,
        heading: 91.3,
        speed: 10.0,
        cell,
        image_key: Some(format!("frames/{}.jpg", FrameId::from_bytes([n; 16]))),
        width: 64,
        height: 48,
        image_bytes: 100,
        faces_blurred: 1,
        plates_blurred: 0,
        phash: u64::from(n),
        quality: 1.0,
        sharpness: 1.0,
        dedupe_of: None,
        dedupe_reason: None,
        model_versions: "centerface".into(),
        processed_at: Utc.with_ymd_and_hms(2026, 6, 1, 9, 0, 0).unwrap(),
    }
}

fn zone(active: bool) -> PrivacyZone {
    PrivacyZone {
        zone_id: uuid::Uuid::from_u128(5),
        contributor_id: ALICE.parse().unwrap(),
        device_id: DeviceId::from_public_key(&[0xab; 32]),
        lat: HOME.0,
        lon: HOME.1,
        radius_m: 200.0,
        active,
        changed_at: Utc::now(),
    }
}

async fn ask(lake: &Lake, role: Role, sql: &str) -> hexroad_lake::Result<String> {
    let out = lake
        .query_read_only(sql, &QueryLimits::default(), role)
        .await?;
    render_batches(&out.batches, hexroad_lake::OutputFormat::Json)
}

const PUBLIC: Role = Role::Public { min_count: 3 };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_sees_published_frames_without_identities_or_zones() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().to_string_lossy()).await.unwrap();
    let mut rows = Vec::new();
    rows.extend((0..5).map(|n| frame(n, ALICE, SHOP)));
    rows.extend((5..7).map(|n| frame(n, ALICE, HOME)));
    rows.push(frame(7, BOB, FAR));
    rows.extend((8..11).map(|n| frame(n, BOB, HOME)));
    lake.append_rows(TableName::Frames, frames_batch(&rows).unwrap())
        .await
        .unwrap();
    lake.record_privacy_zone(&zone(true)).await.unwrap();

    let frames = ask(&lake, PUBLIC, "SELECT * FROM frames ORDER BY frame_id")
        .await
        .unwrap();
    let parsed: Vec<serde_json::Value> = serde_json::from_str(&frames).unwrap();
    // Alice's two frames at home are hidden; Bob's there are his to show.
    assert_eq!(parsed.len(), 9, "{frames}");
    for secret in [ALICE, BOB, "alice", "abababab", "cdcdcdcd"] {
        assert!(!frames.contains(secret), "{secret} in {frames}");
    }
    let columns: Vec<&str> = parsed[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for private in ["device_id", "upload_id", "contributor_id", "ts", "phash"] {
        assert!(!columns.contains(&private), "{private} in {columns:?}");
    }
    let pseudonyms: std::collections::BTreeSet<&str> = parsed
        .iter()
        .map(|r| r["contributor"].as_str().unwrap())
        .collect();
    assert_eq!(pseudonyms.len(), 2, "one pseudonym each this week");
    assert!(pseudonyms.iter().all(|p| p.starts_with("p-")));
    // Times to the hour, positions to four decimals.
    assert!(parsed.iter().all(|r| {
        r["hour"].as_str().unwrap().contains("08:00:00")
            && r["lat"].as_f64().unwrap() * 1e4 == (r["lat"].as_f64().unwrap() * 1e4).round()
    }));

    // Coverage: Bob's one frame far away is under the minimum count.
    let coverage = ask(&lake, PUBLIC, "SELECT frames FROM coverage ORDER BY frames")
        .await
        .unwrap();
    assert_eq!(coverage.trim(), r#"[{"frames":3},{"frames":5}]"#);

    // The raw tables and the operator's views are not there for the public.
    for raw in [
        "SELECT * FROM gnss",
        "SELECT * FROM devices",
        "SELECT * FROM fleet",
        "SELECT * FROM privacy_zones",
        "SELECT * FROM public_published",
        "SELECT count(*) FROM uploads",
    ] {
        let refused = ask(&lake, PUBLIC, raw).await.unwrap_err();
        assert_eq!(refused.refusal(), Refusal::BadQuery, "{raw}");
        assert!(refused.full_message().contains("not found"), "{refused}");
    }
    let listed: Vec<String> = lake
        .relations(PUBLIC)
        .await
        .unwrap()
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    assert_eq!(listed, ["coverage", "freshness", "frames"]);

    // The operator sees every row, named.
    let all = ask(&lake, Role::Operator, "SELECT contributor_id FROM frames")
        .await
        .unwrap();
    assert_eq!(all.matches(ALICE).count(), 7);

    // A withdrawn zone hides nothing any more.
    lake.record_privacy_zone(&zone(false)).await.unwrap();
    let shown = ask(&lake, PUBLIC, "SELECT count(*) AS n FROM frames")
        .await
        .unwrap();
    assert_eq!(shown.trim(), r#"[{"n":11}]"#);
}
