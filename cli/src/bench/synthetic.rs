//! Synthetic frame rows for the benchmarks that need millions of them.

use anyhow::Result;
use chrono::{DateTime, Duration, Utc};
use hexroad_lake::{FrameRecord, Lake, TableName};
use hexroad_wire::{ContributorId, DeviceId, FrameId, UploadId};
use rand::{Rng, SeedableRng};

/// Drives (uploads) committed together, as the vision worker's commits
/// arrive from many devices at once.
const UPLOADS_PER_COMMIT: usize = 64;

/// Drives around Helsinki: each contributor's frames come in drives of a few
/// hundred frames, 3 m apart, heading drifting, on a random day; about one
/// frame in twelve is a duplicate (no image).
///
/// The lake is left as production leaves it, not as one bulk load: each
/// commit holds [`UPLOADS_PER_COMMIT`] drives of different contributors
/// (shuffled, as uploads arrive), and one maintenance pass then compacts,
/// checkpoints and cleans up as `serve` does in the background.
pub async fn generate(
    lake: &Lake,
    total: usize,
    contributors: usize,
    days: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    const CHUNK: usize = 1_000_000;
    let per_contributor = total.div_ceil(contributors);
    let mut made = 0usize;
    let mut contributor = 0usize;
    let mut commits = 0usize;
    let bar = indicatif::ProgressBar::new(total as u64);
    while made < total {
        let want = CHUNK.min(total - made);
        let first = contributor;
        let chunk = tokio::task::spawn_blocking(move || {
            let mut rows = Vec::with_capacity(want);
            let mut c = first;
            while rows.len() < want {
                let take = per_contributor.min(want - rows.len());
                contributor_frames(c, take, days, now, &mut rows);
                c += 1;
            }
            (arrival_order(rows, first as u64), c)
        })
        .await?;
        let (drives, next) = chunk;
        contributor = next;
        let mut drives = drives.into_iter().peekable();
        while drives.peek().is_some() {
            let rows: Vec<FrameRecord> =
                drives.by_ref().take(UPLOADS_PER_COMMIT).flatten().collect();
            made += rows.len();
            let batch = hexroad_lake::schema::frames_batch(&rows)?;
            lake.append_rows(TableName::Frames, batch).await?;
            commits += 1;
            bar.set_position(made as u64);
        }
    }
    bar.finish_and_clear();
    let t = std::time::Instant::now();
    let maintained = lake
        .maintain(&hexroad_lake::Maintenance {
            // Every table checkpointed, however few commits it has.
            checkpoint_every: 1,
            ..hexroad_lake::Maintenance::default()
        })
        .await?;
    let compacted: u64 = maintained.iter().map(|m| m.compacted_files).sum();
    println!(
        "  written as {commits} commits of {UPLOADS_PER_COMMIT} drives; maintenance compacted \
         {compacted} files in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The chunk's rows as drives in a shuffled order, so each commit mixes
/// contributors as arriving uploads do.
fn arrival_order(rows: Vec<FrameRecord>, seed: u64) -> Vec<Vec<FrameRecord>> {
    use rand::seq::SliceRandom;
    let mut drives: Vec<Vec<FrameRecord>> = Vec::new();
    for row in rows {
        match drives.last_mut() {
            Some(d) if d[0].upload_id == row.upload_id => d.push(row),
            _ => drives.push(vec![row]),
        }
    }
    drives.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    drives
}

fn contributor_frames(
    c: usize,
    mut n: usize,
    days: i64,
    now: DateTime<Utc>,
    rows: &mut Vec<FrameRecord>,
) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c as u64);
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&(c as u64).to_be_bytes());
    let device = DeviceId::from_public_key(&key);
    let contributor: ContributorId = format!("contributor-{c:05}")
        .parse()
        .expect("a valid contributor id");
    while n > 0 {
        let len = rng.random_range(100..400).min(n);
        n -= len;
        let upload = UploadId(uuid::Uuid::from_u128(rng.random()));
        let start = now - Duration::seconds(rng.random_range(3600..days * 86_400));
        let (mut lat, mut lon) = (
            rng.random_range(60.15..60.25),
            rng.random_range(24.80..25.10),
        );
        let mut heading: f64 = rng.random_range(0.0..360.0);
        for i in 0..len {
            heading = (heading + rng.random_range(-4.0..4.0)).rem_euclid(360.0);
            let step = 3.0 / hexroad_wire::grid::EARTH_RADIUS_M;
            lat += (step * heading.to_radians().cos()).to_degrees();
            lon += (step * heading.to_radians().sin() / lat.to_radians().cos()).to_degrees();
            let frame_id = FrameId::from_bytes((upload.0.as_u128() ^ i as u128).to_be_bytes());
            let ts = start + Duration::milliseconds(300 * i as i64);
            let duplicate = rng.random_ratio(1, 12);
            let cell = hexroad_wire::grid::cell_at(lat, lon)
                .map(u64::from)
                .unwrap_or_default();
            rows.push(FrameRecord {
                image_key: (!duplicate).then(|| frame_id.image_key()),
                dedupe_of: duplicate
                    .then(|| FrameId::from_bytes(rng.random::<u128>().to_be_bytes())),
                dedupe_reason: duplicate.then(|| "near_duplicate".to_owned()),
                frame_id,
                upload_id: upload,
                device_id: device.clone(),
                contributor_id: contributor.clone(),
                ts,
                lat,
                lon,
                heading,
                speed: 10.0,
                cell,
                width: 1280,
                height: 720,
                image_bytes: rng.random_range(80_000..200_000),
                faces_blurred: u32::from(rng.random_ratio(1, 8)),
                plates_blurred: 0,
                phash: rng.random(),
                quality: rng.random_range(0.3..1.0),
                sharpness: rng.random_range(50.0..500.0),
                model_versions: "faces@bench".into(),
                processed_at: ts + Duration::minutes(5),
            });
        }
    }
}
