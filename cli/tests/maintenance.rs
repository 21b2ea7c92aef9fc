//! History does not change answers: after compaction, checkpoints, log
//! cleanup and vacuum (`hexroad maintain`), every acknowledged upload and
//! every published frame is still there exactly once, SQL answers the
//! same, tiles decode to the same features, and a reward epoch closed
//! before the maintenance reruns to the same bytes while the retention
//! keeps what it read.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;

mod common;
use common::{
    assert_tables_match, hexroad, ledger, python, sim, sql, sql_u64, succeed, wait_processed,
};

/// Every answer compared before and after, each in a fixed order.
const QUERIES: &[&str] = &[
    "SELECT upload_id, device_id, kind, status, sha256 FROM uploads ORDER BY upload_id",
    // Sums of exact integers: compaction may reorder rows (gnss by cell),
    // and a float sum's last digits follow the order it adds in.
    "SELECT upload_id, count(*) AS n, min(ts) AS first, max(ts) AS last, \
     sum(CAST(round(lat * 1e9) AS BIGINT)) AS lat \
     FROM gnss GROUP BY upload_id ORDER BY upload_id",
    "SELECT upload_id, signal, count(*) AS n, sum(CAST(round(value * 1e6) AS BIGINT)) AS total \
     FROM telemetry GROUP BY upload_id, signal ORDER BY upload_id, signal",
    "SELECT frame_id, upload_id, ts, lat, lon, cell, image_key FROM frames ORDER BY frame_id",
    "SELECT upload_id, status FROM processing ORDER BY upload_id",
    "SELECT * FROM coverage ORDER BY 1",
];

fn answers(data: &Path) -> Vec<String> {
    QUERIES
        .iter()
        .map(|q| serde_json::to_string(&sql(data, q)).unwrap())
        .collect()
}

/// `hexroad epoch run`, which may fail.
fn epoch_run(data: &Path, epoch: &str, out: &Path) -> std::process::Output {
    common::epoch_command(data, epoch, out).output().unwrap()
}

/// `hexroad maintain` with compaction of anything over two files; its
/// report, one line per table it changed.
fn maintain(data: &Path, extra: &[&str]) -> String {
    let out = succeed(
        hexroad(&["maintain", "--data"])
            .arg(data)
            .args(extra)
            .env("HEXROAD__LAKE__COMPACT_OVER_FILES", "2"),
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The tiles z10–z16 over a published frame, each decoded by
/// `mapbox-vector-tile` into its features, sorted: the same features in
/// any order compare equal.
fn decoded_tiles(data: &Path, around: (f64, f64)) -> String {
    let server = common::serve(data, "127.0.0.1:0", &[]);
    let script = r#"
import json, math, sys, urllib.request
import mapbox_vector_tile
base, lat, lon = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
out = {}
for z in range(10, 17):
    n = 2 ** z
    la = math.radians(lat)
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.log(math.tan(la) + 1.0 / math.cos(la)) / math.pi) / 2.0 * n)
    with urllib.request.urlopen(f"{base}/tiles/{z}/{x}/{y}.mvt") as r:
        body = r.read()
    layers = mapbox_vector_tile.decode(body, default_options={"y_coord_down": True}) if body else {}
    out[f"{z}/{x}/{y}"] = {
        name: sorted(json.dumps(f, sort_keys=True) for f in layer["features"])
        for name, layer in layers.items()
    }
print(json.dumps(out, sort_keys=True))
"#;
    let out = succeed(
        Command::new(python())
            .arg("-c")
            .arg(script)
            .arg(&server.base)
            .arg(around.0.to_string())
            .arg(around.1.to_string()),
    );
    drop(server);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("frames"), "the tiles hold frames: {text}");
    text
}

/// Files under a table's folder whose name ends in `suffix`.
fn count_files(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(suffix)
        })
        .count()
}

#[test]
fn maintenance_changes_no_answer_and_no_closed_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let start = Utc::now() - chrono::Duration::hours(2);
    let report = {
        let server = common::serve(
            &data,
            "127.0.0.1:0",
            &[("HEXROAD__VISION__POLL_INTERVAL", "200ms")],
        );
        let report = sim(&server.base, &["--seed", "21", "--devices", "3"]);
        wait_processed(&data, Duration::from_secs(300));
        report
    };
    let end = Utc::now() + chrono::Duration::seconds(1);
    std::thread::sleep(Duration::from_millis(1500));
    let epoch = common::epoch_interval(start, end);
    let closed = epoch_run(&data, &epoch, &dir.path().join("before"));
    assert!(closed.status.success(), "{closed:?}");
    let paid = ledger(&dir.path().join("before"));

    let frame = &sql(
        &data,
        "SELECT lat, lon FROM frames WHERE image_key IS NOT NULL ORDER BY frame_id LIMIT 1",
    )[0];
    let around = (
        frame["lat"].as_f64().unwrap(),
        frame["lon"].as_f64().unwrap(),
    );
    let before = answers(&data);
    let tiles_before = decoded_tiles(&data, around);
    let gnss = data.join("tables/gnss");
    let files_before = count_files(&gnss, ".parquet");

    // Maintenance within the retention: compaction and checkpoints.
    let done = maintain(&data, &[]);
    assert!(
        done.lines()
            .any(|l| l.starts_with("gnss ") && !l.contains("compacted     0 files")),
        "gnss was compacted: {done}"
    );
    assert!(done.contains("checkpointed"), "{done}");
    assert_eq!(answers(&data), before, "SQL after compaction");
    assert_eq!(decoded_tiles(&data, around), tiles_before);
    let rerun = epoch_run(&data, &epoch, &dir.path().join("rerun"));
    assert!(rerun.status.success(), "{rerun:?}");
    assert_eq!(
        ledger(&dir.path().join("rerun")),
        paid,
        "a closed epoch reruns to the same bytes after compaction"
    );
    assert_eq!(
        count_files(&gnss, ".parquet"),
        files_before + 1,
        "the replaced files are kept within the retention"
    );

    // Past the retention: the log before the checkpoint and the replaced
    // files go; what the tables hold now does not change.
    let logs_before = count_files(&gnss.join("_delta_log"), ".json");
    let done = maintain(&data, &["--retention", "0s"]);
    assert!(
        count_files(&gnss.join("_delta_log"), ".json") < logs_before,
        "old log entries removed: {done}"
    );
    assert_eq!(
        count_files(&gnss, ".parquet"),
        1,
        "only the compacted file is left: {done}"
    );
    assert_eq!(answers(&data), before, "SQL after cleanup and vacuum");
    assert_eq!(decoded_tiles(&data, around), tiles_before);
    assert_tables_match(&data, &report);
    assert_eq!(
        sql_u64(
            &data,
            "SELECT count(*) - count(DISTINCT frame_id) FROM frames"
        ),
        0
    );
    // An epoch older than the retention cannot be read as it was: the
    // rerun refuses, saying why, rather than paying from another state.
    let late = epoch_run(&data, &epoch, &dir.path().join("late"));
    assert!(!late.status.success(), "{late:?}");
    let why = String::from_utf8_lossy(&late.stderr);
    assert!(why.contains("retention"), "{why}");
}
