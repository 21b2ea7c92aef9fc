//! `hexroad bench sql`: three analyst queries over millions of generated
//! frame rows, timed in hexroad and in DuckDB (the `duckdb` Python package)
//! reading the same Parquet files, in the same run, with their answers
//! checked against each other.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use hexroad_lake::QueryLimits;
use hexroad_lake::arrow::array::{Array, AsArray};
use hexroad_lake::arrow::datatypes::Int64Type;
use serde::Deserialize;

use super::common::count_frames;
use super::synthetic::generate;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Frame rows to generate.
    #[arg(long, default_value_t = 10_000_000)]
    rows: usize,
    /// Contributors (one device each) sharing them.
    #[arg(long, default_value_t = 10_000)]
    contributors: usize,
    /// Days the drives are spread over, ending now.
    #[arg(long, default_value_t = 30)]
    days: i64,
    /// Runs of each query; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// hexroad's memory limit per query, MiB (serve's default is 1024).
    #[arg(long, default_value_t = 1024)]
    memory_mib: usize,
    /// Keep the generated lake here and reuse it on the next run
    /// [default: a temporary folder]
    #[arg(long)]
    data: Option<PathBuf>,
    /// Python with duckdb installed [default: $HEXROAD_PYTHON or .venv/bin/python]
    #[arg(long)]
    python: Option<PathBuf>,
}

/// One analyst question, as each engine is asked it.
struct Question {
    name: &'static str,
    /// The column whose sum (with the row count) checks the two answers agree.
    check: &'static str,
    sql: &'static str,
}

/// `{parent10}` and `{parent7}` are a frame's H3 cell at resolution 10 and 7:
/// `h3_cell_to_parent` in hexroad. DuckDB's H3 extension is downloaded from
/// its own site, which this machine cannot reach, so DuckDB is given the
/// same parent by bit arithmetic on the index (the resolution field set, the
/// finer digits set to 7): identical cells, and cheaper than a function call.
/// `{now}` is a fixed instant, in epoch seconds, so both see the same ages.
const QUESTIONS: [Question; 3] = [
    Question {
        name: "coverage by cell",
        check: "frames",
        sql: "SELECT {parent10} AS cell, count(*) AS frames, \
              count(DISTINCT contributor_id) AS contributors, \
              min(ts) AS first_seen, max(ts) AS last_seen \
              FROM frames WHERE image_key IS NOT NULL GROUP BY 1",
    },
    Question {
        name: "freshness by area",
        check: "cells",
        sql: "WITH cells AS ( \
                SELECT {parent10} AS cell, max(ts) AS last_seen FROM frames \
                WHERE image_key IS NOT NULL \
                  AND lat BETWEEN 60.15 AND 60.20 AND lon BETWEEN 24.90 AND 25.00 \
                GROUP BY 1) \
              SELECT {parent7_of_cell} AS area, count(*) AS cells, \
                avg({now} - date_part('epoch', last_seen)) / 86400 AS mean_age_days, \
                sum(CASE WHEN date_part('epoch', last_seen) < {now} - 7 * 86400 \
                    THEN 1 ELSE 0 END) AS stale_cells \
              FROM cells GROUP BY 1 ORDER BY 1",
    },
    Question {
        name: "frames per contributor per day",
        check: "frames",
        sql: "SELECT contributor_id, date_trunc('day', ts) AS day, count(*) AS frames, \
              count(DISTINCT {parent10}) AS cells \
              FROM frames WHERE image_key IS NOT NULL GROUP BY 1, 2",
    },
];

fn hexroad_sql(q: &Question, now: i64) -> String {
    q.sql
        .replace("{parent10}", "h3_cell_to_parent(cell, 10)")
        .replace("{parent7_of_cell}", "h3_cell_to_parent(cell, 7)")
        .replace("{now}", &now.to_string())
}

/// The query as DuckDB is asked it: `frames` is its view over the same
/// Parquet files (made by the script from the list of paths).
fn duckdb_sql(q: &Question, now: i64) -> String {
    // Parent at resolution r: resolution bits 52..56 = r, digits r+1..15 = 7.
    let parent = |col: &str, r: u32| {
        format!(
            "(({col} & ~(CAST(15 AS BIGINT) << 52)) | (CAST({r} AS BIGINT) << 52) | {})",
            (1u64 << (3 * (15 - r))) - 1
        )
    };
    q.sql
        .replace("{parent10}", &parent("cell", 10))
        .replace("{parent7_of_cell}", &parent("cell", 7))
        .replace("{now}", &now.to_string())
}

#[derive(Deserialize)]
struct DuckdbReport {
    version: String,
    threads: u64,
    /// Per question: seconds of each run.
    seconds: Vec<Vec<f64>>,
    /// Per question: (rows, sum of the check column).
    checks: Vec<(u64, i64)>,
}

const DUCKDB_SCRIPT: &str = include_str!("sql_duckdb.py");

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

pub async fn run(args: Args) -> Result<()> {
    if args.rows == 0 || args.contributors == 0 || args.days <= 0 || args.runs == 0 {
        bail!("--rows, --contributors, --days and --runs must be positive");
    }
    let python = super::common::venv_python(args.python.clone());
    let (_temp, data, lake) = super::common::bench_lake(args.data.clone()).await?;
    let now = Utc::now();

    let present = count_frames(&lake).await?;
    if present >= args.rows as u64 {
        println!(
            "hexroad bench sql: reusing {present} frame rows in {}",
            data.display()
        );
    } else if present > 0 {
        bail!(
            "{} holds {present} frame rows, fewer than --rows {}: give an empty folder",
            data.display(),
            args.rows
        );
    } else {
        let t = Instant::now();
        generate(&lake, args.rows, args.contributors, args.days, now).await?;
        println!(
            "hexroad bench sql: generated {} frame rows from {} contributors over {} days in {:.1} s",
            args.rows,
            args.contributors,
            args.days,
            t.elapsed().as_secs_f64()
        );
    }
    // The files the table's latest version is made of: the folder also
    // holds those compaction replaced, until vacuum removes them.
    let files: Vec<PathBuf> = lake
        .data_file_uris(hexroad_lake::TableName::Frames)
        .await?
        .iter()
        .map(|uri| PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri)))
        .collect();
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()
        .context("sizing the frames table's files")?;
    println!(
        "  the frames table: {} Parquet files, {:.0} MB, at {}",
        files.len(),
        bytes as f64 / 1e6,
        data.join("tables/frames").display()
    );

    let now_s = now.timestamp();
    let limits = QueryLimits {
        timeout: std::time::Duration::from_secs(600),
        memory_bytes: args.memory_mib.saturating_mul(1 << 20),
        max_result_bytes: usize::MAX,
        ..QueryLimits::default()
    };
    let mut ours = Vec::new();
    for q in &QUESTIONS {
        let sql = hexroad_sql(q, now_s);
        let mut seconds = Vec::new();
        let mut check = (0, 0);
        for _ in 0..args.runs {
            let t = Instant::now();
            let out = lake
                .query_read_only(&sql, &limits, hexroad_lake::Role::Operator)
                .await
                .with_context(|| {
                    format!(
                        "hexroad on {:?} (a larger --memory-mib may be needed)",
                        q.name
                    )
                })?;
            seconds.push(t.elapsed().as_secs_f64());
            check = checksum(&out, q.check)?;
        }
        ours.push((median(seconds), check));
    }

    let duck = duckdb(
        &python,
        &files,
        &QUESTIONS.map(|q| duckdb_sql(&q, now_s)),
        &QUESTIONS.map(|q| q.check),
        args.runs,
    );
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "  {:<32} {:>10} {:>10} {:>16} {:>14}",
        "query (median of runs)", "hexroad", "DuckDB", "hexroad/DuckDB", "of the limit"
    );
    let duck = match duck {
        Ok(d) => Some(d),
        Err(e) => {
            println!("  DuckDB: not measured ({e:#}); run scripts/setup --test for the venv");
            None
        }
    };
    let mut agree = true;
    for (i, q) in QUESTIONS.iter().enumerate() {
        let (ours_s, ours_check) = ours[i];
        let (theirs, ratio) = match &duck {
            Some(d) => {
                let theirs = median(d.seconds[i].clone());
                agree &= d.checks[i] == ours_check;
                if d.checks[i] != ours_check {
                    println!(
                        "  {}: answers differ: hexroad {ours_check:?} (rows, sum of {}), DuckDB {:?}",
                        q.name, q.check, d.checks[i]
                    );
                }
                (format!("{theirs:.3} s"), format!("{:.2}×", ours_s / theirs))
            }
            None => ("-".into(), "-".into()),
        };
        println!(
            "  {:<32} {:>10} {:>10} {:>16} {:>13.1}%",
            q.name,
            format!("{ours_s:.3} s"),
            theirs,
            ratio,
            100.0 * ours_s / 60.0
        );
    }
    if let Some(d) = &duck {
        println!(
            "  DuckDB {} on {} threads, hexroad (DataFusion) on {threads}; the same Parquet files; \
             'of the limit' is hexroad's time against serve's default 60 s query limit",
            d.version, d.threads
        );
        if !agree {
            bail!("hexroad and DuckDB disagree (see above)");
        }
        println!("  answers agree: row counts and sums equal for all three queries");
    }
    for q in &QUESTIONS {
        println!("  -- {}: {}", q.name, squeeze(&hexroad_sql(q, now_s)));
    }
    Ok(())
}

fn squeeze(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// (rows, sum of `column` as i64) of an answer.
fn checksum(out: &hexroad_lake::QueryOutput, column: &str) -> Result<(u64, i64)> {
    let mut sum = 0i64;
    for batch in &out.batches {
        let col = batch
            .column_by_name(column)
            .with_context(|| format!("no column {column}"))?;
        let col = hexroad_lake::arrow::compute::cast(
            col,
            &hexroad_lake::arrow::datatypes::DataType::Int64,
        )?;
        let col = col
            .as_primitive_opt::<Int64Type>()
            .with_context(|| format!("{column} did not cast to Int64"))?;
        sum += (0..col.len())
            .filter(|&i| col.is_valid(i))
            .map(|i| col.value(i))
            .sum::<i64>();
    }
    Ok((out.num_rows() as u64, sum))
}

fn duckdb(
    python: &Path,
    files: &[PathBuf],
    queries: &[String; 3],
    checks: &[&str; 3],
    runs: usize,
) -> Result<DuckdbReport> {
    use std::io::Write;
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let files = files
        .iter()
        .map(|f| {
            f.to_str()
                .with_context(|| format!("{} is not UTF-8", f.display()))
        })
        .collect::<Result<Vec<&str>>>()?;
    let input = serde_json::json!({
        "files": files,
        "queries": queries,
        "checks": checks,
        "runs": runs,
        "threads": threads,
    });
    let mut child = Command::new(python)
        .arg("-c")
        .arg(DUCKDB_SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", python.display()))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(input.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout).context("reading DuckDB's report")
}
