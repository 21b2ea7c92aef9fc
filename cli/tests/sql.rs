//! `hexroad sql` from outside: read-only, with time and memory limits, and a
//! clear message with a failing exit code for every refusal.

use std::path::Path;

mod common;
use common::hexroad;

fn refused(data: &Path, extra: &[&str], query: &str, expect: &str) {
    let out = hexroad(&["sql", "--data"])
        .arg(data)
        .args(extra)
        .arg(query)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{query}: {stderr}");
    assert!(stderr.contains(expect), "{query}: {stderr}");
    assert!(out.stdout.is_empty(), "{query}: nothing printed on stdout");
}

#[test]
fn changes_runaway_queries_and_bad_sql_are_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Creates the (empty) tables.
    let out = hexroad(&["sql", "--data"])
        .arg(&data)
        .arg("SELECT count(*) FROM uploads")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = data.join("tables/uploads/_delta_log");
    let versions = std::fs::read_dir(&log).unwrap().count();

    refused(&data, &[], "DROP TABLE uploads", "DROP is not allowed");
    refused(
        &data,
        &[],
        "CREATE TABLE t AS SELECT 1",
        "CREATE is not allowed",
    );
    refused(
        &data,
        &[],
        "INSERT INTO uploads SELECT * FROM uploads",
        "INSERT is not allowed",
    );
    refused(&data, &[], "DELETE FROM uploads", "DELETE is not allowed");
    refused(
        &data,
        &[],
        "SET datafusion.execution.batch_size = 1",
        "SET is not allowed",
    );
    refused(
        &data,
        &[],
        "SELECT 1; DROP TABLE gnss",
        "one statement at a time",
    );
    refused(&data, &[], "SELEC 1", "SELEC");
    refused(&data, &[], "SELECT nope FROM uploads", "nope");
    refused(
        &data,
        &["--timeout", "300ms"],
        "SELECT count(*) FROM generate_series(1, 1000000000) a, generate_series(1, 1000) b",
        "longer than its limit of 0.3 s",
    );
    refused(
        &data,
        &["--memory-mib", "2"],
        "SELECT array_agg(value) FROM generate_series(1, 5000000)",
        "Resources exhausted",
    );
    assert_eq!(
        std::fs::read_dir(&log).unwrap().count(),
        versions,
        "no table version was added"
    );
}
