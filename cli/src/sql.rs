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
    /// The SQL query.
    query: String,
}

pub async fn run(args: Args) -> Result<()> {
    let lake = Lake::open(&args.data)
        .await
        .with_context(|| format!("opening data location {}", args.data))?;
    let output = lake.query(&args.query).await?;
    let text = render_batches(&output.batches, args.format)?;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(())
}
