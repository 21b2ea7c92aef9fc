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

/// The largest resident set of any waited-for child, in bytes.
#[expect(unsafe_code, reason = "getrusage is only reachable through libc")]
fn children_peak_rss() -> u64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_CHILDREN is valid.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) } == 0;
    if !ok {
        return 0;
    }
    // SAFETY: initialised by the successful call above.
    let usage = unsafe { usage.assume_init() };
    (usage.ru_maxrss as u64) * 1024
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
    let run = Command::new(std::env::current_exe()?)
        .args(["epoch", "run", "--epoch", &epoch, "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .env("HEXROAD__REWARDS__GRACE", "0s")
        .env("RUST_LOG", "warn,buoyant_kernel=off")
        .output()
        .context("running hexroad epoch run")?;
    let epoch_s = t.elapsed().as_secs_f64();
    let peak = children_peak_rss();
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
