//! `hexroad bench epoch`: a reward epoch over millions of frames from
//! thousands of contributors, run as `hexroad epoch run` in a child process
//! so its time and peak memory are its own; beside one plain scan of the
//! same frames (the least any epoch must do) in the same run.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Frame rows to generate.
    #[arg(long, default_value_t = 10_000_000)]
    rows: usize,
    /// Contributors (one device each) sharing them.
    #[arg(long, default_value_t = 10_000)]
    contributors: usize,
    /// Keep the generated lake here and reuse it [default: a temporary folder]
    #[arg(long)]
    data: Option<PathBuf>,
}

/// Runs `command` to its end, with its output, and its peak resident
/// memory in bytes: the high-water mark of its own address space
/// (`VmHWM`), read every 10 ms while it runs. Not `getrusage`: a child's
/// `ru_maxrss` also counts the parent's memory it shared between fork and
/// exec, which after generating millions of rows is the bench's, not the
/// epoch's.
fn run_measured(mut command: Command) -> Result<(std::process::Output, u64)> {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(kib * 1024);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let output = std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    Ok((output, peak))
}

/// Reads `pipe` to its end on a thread of its own, so a child writing more
/// than a pipe holds never blocks on it.
fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

pub async fn run(args: Args) -> Result<()> {
    if args.rows == 0 || args.contributors == 0 {
        bail!("--rows and --contributors must be positive");
    }
    let (temp, data, lake) = super::common::bench_lake(args.data.clone()).await?;
    let present = super::common::count_frames(&lake).await?;
    let days = 7;
    if present == 0 {
        let t = Instant::now();
        super::synthetic::generate(
            &lake,
            args.rows,
            args.contributors,
            days,
            chrono::Utc::now(),
        )
        .await?;
        println!(
            "hexroad bench epoch: generated {} frames from {} contributors over {days} days in {:.1} s",
            args.rows,
            args.contributors,
            t.elapsed().as_secs_f64()
        );
    }
    let frames = super::common::count_frames(&lake).await?;
    // The epoch: the week the frames were generated in, closing a second
    // from now (whole seconds, after the last commit); on a reused lake, the
    // epoch paid there before, which `epoch run` recomputes as it was.
    let epoch = match lake.paid_epochs().await?.pop() {
        Some(paid) => paid,
        None => {
            let end = chrono::Utc::now() + chrono::Duration::seconds(1);
            let start = end - chrono::Duration::days(days + 1);
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            format!(
                "{}/{}",
                start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        }
    };

    // The floor: one scan of what the epoch reads.
    let t = Instant::now();
    lake.query(
        "SELECT contributor_id, count(*) AS n, sum(quality) AS q, count(DISTINCT h3_cell_to_parent(cell, 10)) AS cells \
         FROM frames WHERE image_key IS NOT NULL GROUP BY contributor_id",
    )
    .await?;
    let scan_s = t.elapsed().as_secs_f64();

    let out = temp.path().join("ledgers");
    let t = Instant::now();
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["epoch", "run", "--epoch", &epoch, "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .env("HEXROAD__REWARDS__GRACE", "0s")
        .env("RUST_LOG", "warn,buoyant_kernel=off");
    let (run, peak) = tokio::task::spawn_blocking(move || run_measured(command))
        .await?
        .context("running hexroad epoch run")?;
    let epoch_s = t.elapsed().as_secs_f64();
    if !run.status.success() {
        bail!(
            "hexroad epoch run failed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let summary = String::from_utf8_lossy(&run.stdout);
    println!("hexroad bench epoch: {frames} frames, epoch {epoch}");
    println!(
        "  hexroad epoch run:       {epoch_s:8.1} s, peak memory {:.0} MiB",
        peak as f64 / (1 << 20) as f64
    );
    println!(
        "  one aggregate scan of the same frames (the floor): {scan_s:.1} s → the epoch takes {:.1}× that",
        epoch_s / scan_s
    );
    if let Some(line) = summary.lines().next() {
        println!("  {line}");
    }
    Ok(())
}
