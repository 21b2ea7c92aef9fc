//! `hexroad sql`: one query over the tables, printed for a terminal or a pipe.

use std::io::Write;

use anyhow::{Context, Result};
use hexroad_lake::{Lake, OutputFormat, render_batches};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data location: a folder or an object-store URL.
    #[arg(long, default_value = "./data")]
    data: String,
    /// Output format: table, csv or json.
    #[arg(long, default_value = "table")]
    format: OutputFormat,
    /// Stop the query after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
    /// Memory for joins, sorts and aggregations, MiB.
    #[arg(long, default_value_t = 1024)]
    memory_mib: usize,
    /// The SQL query (read-only: SELECT and EXPLAIN).
    query: String,
}

pub async fn run(args: Args) -> Result<()> {
    let lake = Lake::open(&args.data)
        .await
        .with_context(|| format!("opening data location {}", args.data))?;
    let limits = hexroad_lake::QueryLimits {
        timeout: args.timeout,
        memory_bytes: args.memory_mib.saturating_mul(1 << 20),
    };
    let output = lake.query_read_only(&args.query, limits).await?;
    let text = render_batches(&output.batches, args.format)?;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}
