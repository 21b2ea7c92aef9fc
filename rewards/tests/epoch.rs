//! The epoch job over a real lake: new streets pay more per frame than
//! streets covered the week before, and a contributor's own re-drives of a
//! block pay less each time.

use std::sync::Arc;

use chrono::{Duration, Utc};
use hexroad_lake::{FrameRecord, Lake, TableName};
use hexroad_rewards::{Epoch, RewardConfig, job};
use hexroad_wire::{ContributorId, DeviceId, FrameId, UploadId};

/// `n` published frames 3 m apart heading east from (lat, lon), at `at`.
fn drive(
    upload: u128,
    who: &str,
    device: u8,
    (lat, lon): (f64, f64),
    n: usize,
    at: chrono::DateTime<Utc>,
) -> Vec<FrameRecord> {
    let step = 3.0 / (111_320.0 * lat.to_radians().cos());
    (0..n)
        .map(|i| {
            let lon = lon + step * i as f64;
            FrameRecord {
                frame_id: FrameId::from_bytes(((upload << 32) | i as u128).to_be_bytes()),
                upload_id: UploadId(uuid::Uuid::from_u128(upload)),
                device_id: DeviceId::from_public_key(&[device; 32]),
                contributor_id: who.parse::<ContributorId>().unwrap(),
                ts: at + Duration::milliseconds(300 * i as i64),
                lat,
                lon,
                heading: 90.0,
                speed: 10.0,
                cell: hexroad_wire::grid::cell_at(lat, lon).unwrap().into(),
                image_key: Some(format!("frames/t/{upload}-{i}.jpg")),
                width: 320,
                height: 240,
                image_bytes: 1000,
                faces_blurred: 0,
                plates_blurred: 0,
                phash: i as u64,
                quality: 0.8,
                sharpness: 100.0,
                dedupe_of: None,
                dedupe_reason: None,
                model_versions: "test".into(),
                processed_at: at,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_streets_pay_more_per_frame_than_streets_covered_last_week() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(Lake::open(&dir.path().to_string_lossy()).await.unwrap());
    let now = Utc::now();
    let epoch = Epoch::parse(&format!(
        "{}/{}",
        (now - Duration::days(1)).to_rfc3339(),
        (now - Duration::minutes(1)).to_rfc3339()
    ))
    .unwrap();
    let old_street = (60.1700, 24.9400);
    let new_street = (60.2000, 24.9000);
    let mut rows = drive(
        1,
        "veteran",
        1,
        old_street,
        200,
        epoch.start - Duration::days(3),
    );
    rows.extend(drive(
        2,
        "redriver",
        2,
        old_street,
        200,
        epoch.start + Duration::hours(1),
    ));
    rows.extend(drive(
        3,
        "pioneer",
        3,
        new_street,
        200,
        epoch.start + Duration::hours(2),
    ));
    // The re-driver goes round the same block twice more.
    rows.extend(drive(
        4,
        "redriver",
        2,
        old_street,
        200,
        epoch.start + Duration::hours(3),
    ));
    rows.extend(drive(
        5,
        "redriver",
        2,
        old_street,
        200,
        epoch.start + Duration::hours(4),
    ));
    lake.append_rows(
        TableName::Frames,
        hexroad_lake::schema::frames_batch(&rows).unwrap(),
    )
    .await
    .unwrap();

    let config = RewardConfig {
        contributor_cap_pct: 100,
        ..RewardConfig::default()
    };
    let snapshot = lake.snapshot_as_of(Utc::now()).await.unwrap();
    let outcome = job::run(&snapshot, &epoch, &config, &[]).await.unwrap();
    let amount = |who: &str| outcome.split.by_contributor[who].amount;
    let frames = |who: &str| outcome.frames[who];
    assert!(
        !outcome.split.by_contributor.contains_key("veteran"),
        "last week is not this epoch"
    );
    assert_eq!(amount("pioneer") + amount("redriver"), config.budget);
    let per_frame = |who: &str| amount(who) as f64 / frames(who) as f64;
    assert!(
        per_frame("pioneer") > 2.0 * per_frame("redriver"),
        "pioneer {} per frame, re-driver {}",
        per_frame("pioneer"),
        per_frame("redriver")
    );
    // Three passes of the same block claim 1 + 1/2 + 1/4 of one pass.
    let (cell, _) = outcome
        .claims
        .keys()
        .find(|(_, who)| who == "redriver")
        .cloned()
        .unwrap();
    let claim = outcome.claims[&(cell, "redriver".to_owned())];
    let one_pass: u64 = rows
        .iter()
        .filter(|r| r.upload_id == UploadId(uuid::Uuid::from_u128(2)))
        .filter(|r| {
            u64::from(
                h3o::CellIndex::try_from(r.cell)
                    .unwrap()
                    .parent(h3o::Resolution::Ten)
                    .unwrap(),
            ) == cell
        })
        .count() as u64
        * 800;
    assert_eq!(claim, one_pass + one_pass / 2 + one_pass / 4);
}

/// Issue 15, the griefing scenario: a stranger registers a device under a
/// victim's contributor id (open registration, no binding) and farms one
/// spot. The rule that flags "every device of the contributor" acts only
/// on devices the contributor's key bound, so the victim's car is not
/// flagged and is still paid; only the stranger's device is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_farming_under_a_victims_name_flags_only_the_stranger() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(Lake::open(&dir.path().to_string_lossy()).await.unwrap());
    let now = Utc::now();
    let epoch = Epoch::parse(&format!(
        "{}/{}",
        (now - Duration::days(1)).to_rfc3339(),
        (now - Duration::minutes(1)).to_rfc3339()
    ))
    .unwrap();
    let victims_car = DeviceId::from_public_key(&[1; 32]);
    let strangers = DeviceId::from_public_key(&[9; 32]);
    lake.record_enrolment(&hexroad_lake::Enrolment {
        device_id: victims_car.clone(),
        contributor_id: "victim".parse().unwrap(),
        manufacturer: None,
        serial: None,
        bound: true,
        at: epoch.start,
    })
    .await
    .unwrap();
    let mut rows = drive(
        1,
        "victim",
        1,
        (60.17, 24.94),
        300,
        epoch.start + Duration::hours(1),
    );
    let farmed = (60.20, 24.90);
    rows.extend(
        drive(
            2,
            "victim",
            9,
            farmed,
            8000,
            epoch.start + Duration::hours(2),
        )
        .into_iter()
        .map(|mut r| {
            r.lon = farmed.1;
            r.cell = hexroad_wire::grid::cell_at(r.lat, r.lon).unwrap().into();
            r
        }),
    );
    lake.append_rows(
        TableName::Frames,
        hexroad_lake::schema::frames_batch(&rows).unwrap(),
    )
    .await
    .unwrap();
    let config = RewardConfig::default();
    let snapshot = lake.snapshot_as_of(Utc::now()).await.unwrap();
    let outcome = job::run(&snapshot, &epoch, &config, &[]).await.unwrap();
    let farming: Vec<&str> = outcome
        .flags
        .iter()
        .filter(|f| f.rule == "stationary_farming")
        .map(|f| f.subject.as_str())
        .collect();
    assert_eq!(farming, [strangers.as_str()], "{:?}", outcome.flags);
    assert!(!outcome.excluded_devices.contains(victims_car.as_str()));
    assert!(outcome.split.by_contributor["victim"].amount > 0);
}
