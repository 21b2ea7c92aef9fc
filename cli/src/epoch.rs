//! `hexroad epoch run | explain | verify`: an epoch's rewards from the tables
//! as they were when it closed, the reasons behind one amount, and a check
//! of one proof against the ledger's Merkle root.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use hexroad_lake::Lake;
use hexroad_rewards::job::{self, Outcome};
use hexroad_rewards::ledger::{self, Ledger};
use hexroad_rewards::{Epoch, RewardConfig};

#[derive(Debug, clap::Subcommand)]
pub enum Which {
    /// Compute an epoch's rewards and write its ledger.
    Run(RunArgs),
    /// Show the cells, weights, exclusions and arithmetic behind one amount.
    Explain(ExplainArgs),
    /// Check one contributor's proof against a ledger's Merkle root.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct EpochArgs {
    /// Data location: a folder or an object-store URL [default: ./data]
    #[arg(long)]
    data: Option<String>,
    /// An ISO week (2026-W47) or an RFC 3339 interval START/END.
    #[arg(long)]
    epoch: String,
    /// A TOML settings file (its [rewards] section is the rule).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    epoch: EpochArgs,
    /// Where the ledger goes (`<epoch>.ledger.json`).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    epoch: EpochArgs,
    #[arg(long)]
    contributor: String,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[arg(long)]
    ledger: PathBuf,
    #[arg(long)]
    contributor: String,
}

pub async fn run(which: Which) -> Result<()> {
    match which {
        Which::Run(args) => run_epoch(args).await,
        Which::Explain(args) => explain(args).await,
        Which::Verify(args) => verify(args),
    }
}

/// The epoch's outcome and the table versions it read.
async fn compute(args: &EpochArgs) -> Result<(Outcome, Ledger, RewardConfig, Arc<Lake>)> {
    let settings = crate::settings::load_for_data(args.config.as_deref(), args.data.clone())?;
    let config = settings.rewards.clone();
    let epoch = Epoch::parse(&args.epoch).map_err(anyhow::Error::msg)?;
    let close = epoch.close(chrono::Duration::from_std(config.grace)?);
    let now = chrono::Utc::now();
    if now < close {
        bail!(
            "epoch {} closes at {} (its end plus rewards.grace); its rewards can be computed after that",
            epoch.id,
            close.to_rfc3339()
        );
    }
    let regions = match &config.regions {
        Some(path) => hexroad_rewards::regions::load(path)
            .map_err(|e| anyhow::anyhow!("rewards.regions {}: {e}", path.display()))?,
        None => Vec::new(),
    };
    let lake = Arc::new(
        Lake::open_with(&settings.data, &settings.storage)
            .await
            .with_context(|| format!("opening data location {}", settings.data))?,
    );
    let paid = lake
        .paid_epochs()
        .await
        .context("reading the epochs already paid")?;
    epoch
        .check_against_paid(paid.iter().map(String::as_str))
        .map_err(anyhow::Error::msg)?;
    let snapshot = lake.snapshot_as_of(close).await.with_context(|| {
        format!(
            "reading the tables as of {} (an epoch can be rerun only while the lake keeps \
                 what it read: [lake] retention, {} here, after its close)",
            close.to_rfc3339(),
            humantime::format_duration(settings.lake.retention)
        )
    })?;
    let versions = snapshot.versions().to_vec();
    let outcome = job::run(&snapshot, &epoch, &config, &regions).await?;
    let mut ledger = Ledger::new(
        &epoch.id,
        config.budget,
        outcome
            .split
            .by_contributor
            .iter()
            .map(|(who, a)| (who.clone(), a.amount)),
        versions
            .iter()
            .map(|(t, v)| (t.as_str().to_owned(), *v))
            .collect(),
        close.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    ledger.settings_sha256 = config.fingerprint().0;
    Ok((outcome, ledger, config, lake))
}

async fn run_epoch(args: RunArgs) -> Result<()> {
    let (outcome, ledger, config, lake) = compute(&args.epoch).await?;
    let closed_at = outcome
        .epoch
        .close(chrono::Duration::from_std(config.grace)?);
    // The rows first (each table at most once per epoch), the ledger last.
    let rewards =
        hexroad_rewards::tables::rewards_batch(&outcome, ledger.table_version, closed_at)?;
    let settings = config.fingerprint().1;
    let flags = hexroad_rewards::tables::fraud_flags_batch(&outcome, closed_at)?;
    for (table, rows) in [
        (hexroad_lake::TableName::Rewards, rewards),
        (hexroad_lake::TableName::FraudFlags, flags),
    ] {
        let done = lake
            .commit_epoch_rows(table, &ledger.epoch, settings, rows)
            .await?;
        if let hexroad_lake::EpochRows::OtherSettings { .. } = done {
            bail!(
                "epoch {} was paid under other reward settings; its rewards stand as paid. \
                 Run it with the settings it was paid under (the ledger's settings_sha256 \
                 is {} now)",
                ledger.epoch,
                ledger.settings_sha256
            );
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    // The manifest last, atomically: a crashed run leaves no ledger and can
    // simply be run again.
    let path = args.out.join(ledger::file_name(&ledger.epoch));
    let tmp = path.with_extension("json.part");
    std::fs::write(&tmp, ledger.to_bytes())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "epoch {}: {} units to {} contributors over {} cells; {} fraud flags; root {}; ledger {}",
        ledger.epoch,
        ledger.total,
        ledger.rewards.len(),
        outcome.cells.len(),
        outcome.flags.len(),
        ledger.merkle_root,
        path.display()
    );
    for f in &outcome.flags {
        println!(
            "  flag {} {} {}: {}",
            f.rule, f.subject_kind, f.subject, f.detail
        );
    }
    Ok(())
}

async fn explain(args: ExplainArgs) -> Result<()> {
    let (outcome, ledger, config, _) = compute(&args.epoch).await?;
    let who = &args.contributor;
    println!(
        "epoch {} (frames table version {}), contributor {who}",
        ledger.epoch, ledger.table_version
    );
    let devices: Vec<&String> = outcome
        .devices
        .iter()
        .filter(|(_, c)| *c == who)
        .map(|(d, _)| d)
        .collect();
    for f in outcome
        .flags
        .iter()
        .filter(|f| devices.contains(&&f.subject) || f.subject == *who)
    {
        let excluded = outcome.excluded_devices.contains(&f.subject);
        println!(
            "  flagged {} {}: {}{}",
            f.rule,
            f.subject,
            f.detail,
            if excluded {
                " (device excluded this epoch)"
            } else {
                ""
            }
        );
    }
    let Some(a) = outcome.split.by_contributor.get(who) else {
        println!("  no eligible frames in this epoch: amount 0");
        return Ok(());
    };
    println!(
        "  {} eligible frames; budget {} split over {} cells by weight, then within each cell by claim",
        outcome.frames.get(who).copied().unwrap_or(0),
        config.budget,
        outcome.split.by_cell.len()
    );
    println!(
        "  {:<17} {:>7} {:>9} {:>7} {:>10} {:>12} {:>12}",
        "cell", "weight", "days", "region", "claim", "cell amount", "your part"
    );
    for (cell, cell_amount, part) in &a.cells {
        let w = &outcome.cells[cell];
        let claim = outcome
            .claims
            .get(&(*cell, who.clone()))
            .copied()
            .unwrap_or(0);
        println!(
            "  {:<17x} {:>7} {:>9} {:>7} {:>10} {:>12} {:>12}",
            cell,
            w.weight,
            w.days_since.map_or("new".to_owned(), |d| format!("{d:.1}")),
            format!("{:.3}", w.region_milli as f64 / 1000.0),
            claim,
            cell_amount,
            part
        );
    }
    println!(
        "  sum of parts {} - capped off {} + from others' caps {} = {} (cap {})",
        a.uncapped, a.capped_off, a.redistributed, a.amount, outcome.split.cap
    );
    Ok(())
}

fn verify(args: VerifyArgs) -> Result<()> {
    let text = std::fs::read(&args.ledger)
        .with_context(|| format!("reading {}", args.ledger.display()))?;
    let ledger: Ledger = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a hexroad ledger", args.ledger.display()))?;
    let amount = ledger
        .verify(&args.contributor)
        .map_err(anyhow::Error::msg)?;
    println!(
        "ok: {} is owed {amount} in epoch {} (root {})",
        args.contributor, ledger.epoch, ledger.merkle_root
    );
    Ok(())
}
