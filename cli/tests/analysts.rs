//! What an analyst connects with: ADBC's Flight SQL driver against
//! `hexroad serve`, answering as `hexroad sql` does and refusing what it
//! refuses, and the notebooks in `notebooks/` run headless against it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{hexroad, python, root, succeed, wait_processed};

const TOKEN: &str = "an-analysts-token-of-length";

/// Every query through `cli/tests/support/flight_client.py` (ADBC).
fn adbc(flight: &str, auth: &str, queries: &[&str]) -> Value {
    let out = succeed(
        Command::new(python())
            .arg(root().join("cli/tests/support/flight_client.py"))
            .arg(flight)
            .arg(auth)
            .args(queries),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `hexroad sql --format json` on the same data, as rows.
fn cli(data: &Path, query: &str) -> Value {
    let out = succeed(
        hexroad(&["sql", "--format", "json", "--data"])
            .arg(data)
            .arg(query),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A timestamp string as microseconds since the epoch; the two sides write
/// the same instant differently (`…Z`, `…+00:00`, or no zone).
fn instant(s: &str) -> Option<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_micros());
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_micros())
}

/// Equal answers: integers exactly, floats to 1e-9 (sums may add in another
/// order), timestamps as instants, a missing key as null.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i128(), y.as_i128()) {
            (Some(x), Some(y)) => x == y,
            _ => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
            }
        },
        (Value::String(x), Value::String(y)) => {
            x == y || matches!((instant(x), instant(y)), (Some(p), Some(q)) if p == q)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => x.keys().chain(y.keys()).all(|k| {
            same(
                x.get(k).unwrap_or(&Value::Null),
                y.get(k).unwrap_or(&Value::Null),
            )
        }),
        _ => a == b,
    }
}

fn delta_versions(data: &Path) -> usize {
    std::fs::read_dir(data.join("tables"))
        .unwrap()
        .map(|t| {
            std::fs::read_dir(t.unwrap().path().join("_delta_log"))
                .unwrap()
                .count()
        })
        .sum()
}

#[test]
fn adbc_flight_sql_answers_as_hexroad_sql_and_the_notebooks_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = common::serve(
        &data,
        "127.0.0.1:0",
        &[
            ("HEXROAD__VISION__POLL_INTERVAL", "200ms"),
            ("HEXROAD__SQL__TOKEN", TOKEN),
            ("HEXROAD__SQL__TIMEOUT", "10s"),
            ("HEXROAD__SQL__MEMORY_MIB", "64"),
        ],
    );
    common::sim(
        &server.base,
        &["--seed", "7", "--devices", "2", "--spoofers", "1"],
    );
    wait_processed(&data, Duration::from_secs(240));

    let queries = [
        "SELECT * FROM fleet ORDER BY device_id",
        "SELECT * FROM coverage ORDER BY cell",
        "SELECT cell, frames, contributors FROM freshness ORDER BY cell",
        "SELECT h3_h3_to_string(h3_cell_to_parent(cell, 7)) AS area, count(*) AS cells, \
         sum(frames) AS frames FROM coverage GROUP BY 1 ORDER BY 1",
        "SELECT kind, status, count(*) AS n, sum(bytes) AS bytes FROM uploads \
         GROUP BY kind, status ORDER BY kind, status",
        "SELECT signal, count(*) AS n, min(value) AS lo, max(value) AS hi FROM telemetry \
         GROUP BY signal ORDER BY signal",
        "SELECT frame_id, ts, lat, lon, cell, heading, image_key, dedupe_of FROM frames \
         ORDER BY frame_id LIMIT 200",
        "SELECT h3_grid_disk(h3_latlng_to_cell(60.17, 24.94, 9), 1) AS disk",
        "SELECT * FROM processing WHERE false",
    ];
    let answers = adbc(&server.flight, &format!("bearer:{TOKEN}"), &queries);
    assert_eq!(answers["vendor"], "hexroad");
    let tables: Vec<&str> = answers["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for name in [
        "coverage",
        "devices",
        "fleet",
        "frames",
        "freshness",
        "uploads",
    ] {
        assert!(tables.contains(&name), "{name} listed in {tables:?}");
    }
    for (query, answer) in queries.iter().zip(answers["answers"].as_array().unwrap()) {
        let rows = answer
            .get("rows")
            .unwrap_or_else(|| panic!("{query}: {answer}"));
        let expected = cli(&data, query);
        assert!(
            same(rows, &expected),
            "{query}\nFlight SQL: {rows}\nhexroad sql: {expected}"
        );
    }
    let covered = cli(&data, "SELECT count(*) AS n FROM coverage")[0]["n"]
        .as_u64()
        .unwrap();
    assert!(covered > 0, "the sim's drives were published");

    // Refusals are gRPC statuses naming the problem; nothing changes, and
    // the server keeps serving.
    let versions = delta_versions(&data);
    let refused = adbc(
        &server.flight,
        &format!("bearer:{TOKEN}"),
        &[
            "DROP TABLE uploads",
            "INSERT INTO devices SELECT * FROM devices",
            "SELEC 1",
            "SELECT count(*) FROM generate_series(1, 1000000000) a, generate_series(1, 1000) b",
            "SELECT array_agg(repeat('x', 4000)) FROM generate_series(1, 100000)",
            "SELECT count(*) AS n FROM uploads",
        ],
    );
    let answers = refused["answers"].as_array().unwrap();
    for (answer, (grpc, code)) in answers.iter().zip([
        ("PermissionDenied", "read_only"),
        ("PermissionDenied", "read_only"),
        ("InvalidArgument", "bad_query"),
        ("DeadlineExceeded", "query_timeout"),
        ("ResourceExhausted", "memory_limit"),
    ]) {
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(grpc) && message.contains(code),
            "{grpc} {code}: {answer}"
        );
    }
    assert!(
        answers[5]["rows"][0]["n"].as_u64().unwrap() > 0,
        "{}",
        answers[5]
    );
    assert_eq!(delta_versions(&data), versions, "no table changed");

    // Without credentials a caller is the public (issue 15): the public
    // views only, and nothing in them names a device or a contributor.
    let anonymous = adbc(
        &server.flight,
        "none",
        &[
            "SELECT * FROM frames ORDER BY frame_id",
            "SELECT * FROM coverage ORDER BY cell",
            "SELECT * FROM freshness ORDER BY cell",
            "SELECT * FROM devices",
            "SELECT * FROM gnss",
        ],
    );
    let listed: Vec<&str> = anonymous["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    for name in ["coverage", "freshness", "frames"] {
        assert!(listed.contains(&name), "{listed:?}");
    }
    let public = anonymous["answers"].to_string();
    assert!(
        !anonymous["answers"][0]["rows"]
            .as_array()
            .unwrap()
            .is_empty(),
        "published frames are public: {public}"
    );
    for raw in [3, 4] {
        let message = anonymous["answers"][raw]["error"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains("not found"), "{message}");
    }
    for row in cli(&data, "SELECT device_id, contributor_id FROM devices")
        .as_array()
        .unwrap()
    {
        for secret in [&row["device_id"], &row["contributor_id"]] {
            let secret = secret.as_str().unwrap();
            assert!(!public.contains(secret), "{secret} in a public answer");
        }
    }
    for fix in cli(&data, "SELECT lat, lon FROM gnss").as_array().unwrap() {
        let pair = format!("\"lat\":{},\"lon\":{}", fix["lat"], fix["lon"]);
        assert!(
            !public.contains(&pair),
            "a raw fix {pair} in a public answer"
        );
    }
    let wrong = adbc(
        &server.flight,
        "bearer:not-the-token-at-all-no",
        &["SELECT 1 AS one"],
    );
    assert!(wrong["answers"][0]["error"].is_object(), "{wrong}");
    let basic = adbc(
        &server.flight,
        &format!("basic:analyst:{TOKEN}"),
        &["SELECT 1 AS one"],
    );
    assert_eq!(basic["answers"][0]["rows"][0]["one"], 1, "{basic}");

    // The notebooks, headless, against the same server.
    let executed = dir.path().join("notebooks");
    let out = succeed(
        Command::new(python())
            .arg(root().join("notebooks/execute.py"))
            .arg(&executed)
            .env("HEXROAD_FLIGHT_URI", &server.flight)
            .env("HEXROAD_SQL_TOKEN", TOKEN),
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for notebook in ["coverage.ipynb", "fleet.ipynb"] {
        let plots = report[notebook]["plots"].as_u64().unwrap_or(0);
        assert!(plots >= 2, "{notebook} drew its plots: {report}");
        assert!(executed.join(notebook).exists());
    }
    assert!(
        report["coverage.ipynb"]["texts"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{covered} cells with published frames")),
        "the notebook maps every covered cell: {report}"
    );
}

#[test]
fn bench_sql_gets_duckdbs_answers_on_the_same_parquet() {
    let out = succeed(
        hexroad(&[
            "bench",
            "sql",
            "--rows",
            "30000",
            "--contributors",
            "40",
            "--runs",
            "1",
            "--python",
        ])
        .arg(python()),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("generated 30000 frame rows"), "{stdout}");
    assert!(
        stdout.contains("answers agree: row counts and sums equal for all three queries"),
        "{stdout}"
    );
}
