//! `hexroad maintain`: one maintenance pass over the tables now, as `serve`
//! runs every `[lake] interval`: compaction of small files, a checkpoint of
//! every table with new commits, log cleanup and vacuum past the retention.
//! For an operator before a backup or after a bulk load; safe beside a
//! running server (Delta's optimistic concurrency orders the commits).

use std::path::PathBuf;

use anyhow::{Context, Result};
use hexroad_lake::{Lake, Maintenance};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data location: a folder or an object-store URL [default: ./data]
    #[arg(long)]
    data: Option<String>,
    /// A TOML settings file (its [lake] section is the policy).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Keep replaced files and old log entries this long instead of
    /// `[lake] retention`, e.g. `7d`. Epochs closed before then can no
    /// longer be rerun.
    #[arg(long, value_parser = humantime::parse_duration)]
    retention: Option<std::time::Duration>,
}

pub async fn run(args: Args) -> Result<()> {
    let settings = crate::settings::load_for_data(args.config.as_deref(), args.data)?;
    let policy = Maintenance {
        // Everything with a commit since its last checkpoint, and every
        // table's vacuum, now.
        checkpoint_every: 1,
        vacuum_every: std::time::Duration::ZERO,
        retention: args.retention.unwrap_or(settings.lake.retention),
        ..settings.lake.clone()
    };
    let lake = Lake::open_with(&settings.data, &settings.storage)
        .await
        .with_context(|| format!("opening data location {}", settings.data))?;
    let done = lake
        .maintain(&policy)
        .await
        .context("maintaining the tables")?;
    for m in &done {
        println!(
            "{:<14} compacted {:>5} files, {}, {:>5} log files removed, {:>5} files vacuumed",
            m.table.as_str(),
            m.compacted_files,
            if m.checkpointed {
                "checkpointed"
            } else {
                "no checkpoint"
            },
            m.removed_log_files,
            m.vacuumed_files
        );
    }
    if done.is_empty() {
        println!("nothing to do");
    }
    Ok(())
}
