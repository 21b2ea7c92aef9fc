//! `hexroad sql`: read-only queries over the tables, locally or through a
//! server's `POST /v1/sql`, one from the command line or many from a prompt.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result, bail};
use hexroad_lake::arrow::array::RecordBatch;
use hexroad_lake::{Lake, OutputFormat, QueryLimits, Role, render_batches};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data location: a folder or an object-store URL.
    #[arg(long, default_value = "./data")]
    data: String,
    /// Ask a running `hexroad serve` instead of opening the data location.
    #[arg(long)]
    server: Option<String>,
    /// Bearer token for --server.
    #[arg(long, env = "HEXROAD_SQL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output format: table, csv or json.
    #[arg(long, default_value = "table")]
    format: OutputFormat,
    /// Stop the query after this long (local queries; a server has its own).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
    /// Memory for joins, sorts and aggregations, MiB (local queries).
    #[arg(long, default_value_t = 1024)]
    memory_mib: usize,
    /// The SQL query (read-only: SELECT and EXPLAIN). Without one, queries
    /// are read from standard input, each ending with `;`.
    query: Option<String>,
}

enum Target {
    Local(Box<Lake>, QueryLimits),
    Server {
        http: reqwest::Client,
        url: String,
        token: Option<String>,
    },
}

impl Target {
    async fn run(&self, query: &str) -> Result<Vec<RecordBatch>> {
        match self {
            Self::Local(lake, limits) => Ok(lake
                .query_read_only(query, limits, Role::Operator)
                .await?
                .batches),
            Self::Server { http, url, token } => {
                let mut req = http
                    .post(url)
                    .header("accept", "application/vnd.apache.arrow.stream")
                    .json(&serde_json::json!({ "query": query }));
                if let Some(t) = token {
                    req = req.bearer_auth(t);
                }
                let response = req.send().await.with_context(|| format!("asking {url}"))?;
                let status = response.status();
                let body = response
                    .bytes()
                    .await
                    .with_context(|| format!("reading {url}"))?;
                if !status.is_success() {
                    let message = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["message"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                    bail!("the server refused the query ({status}): {message}");
                }
                let reader = hexroad_lake::arrow::ipc::reader::StreamReader::try_new(
                    std::io::Cursor::new(body),
                    None,
                )
                .context("reading the server's Arrow answer")?;
                Ok(reader.collect::<Result<Vec<_>, _>>()?)
            }
        }
    }
}

pub async fn run(args: Args) -> Result<()> {
    let target = match &args.server {
        Some(server) => Target::Server {
            http: reqwest::Client::new(),
            url: format!("{}/v1/sql", server.trim_end_matches('/')),
            token: args.token.clone(),
        },
        None => Target::Local(
            Box::new(
                Lake::open(&args.data)
                    .await
                    .with_context(|| format!("opening data location {}", args.data))?,
            ),
            // The operator's own machine: no cap on the answer's size.
            QueryLimits {
                timeout: args.timeout,
                memory_bytes: args.memory_mib.saturating_mul(1 << 20),
                max_result_bytes: usize::MAX,
                ..QueryLimits::default()
            },
        ),
    };
    if let Some(query) = &args.query {
        let batches = target.run(query).await?;
        std::io::stdout().write_all(render_batches(&batches, args.format)?.as_bytes())?;
        return Ok(());
    }
    prompt(&target, args.format).await
}

/// Reads `;`-terminated queries from standard input; a failing query is
/// reported and the prompt goes on. The exit status says whether all succeeded.
async fn prompt(target: &Target, format: OutputFormat) -> Result<()> {
    let interactive = std::io::stdin().is_terminal();
    let mut failures = 0;
    let mut pending = String::new();
    let show_prompt = |pending: &str| {
        if interactive {
            eprint!(
                "{}",
                if pending.is_empty() {
                    "hexroad> "
                } else {
                    "     ..> "
                }
            );
            let _ = std::io::stderr().flush();
        }
    };
    show_prompt(&pending);
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.context("reading standard input")?;
        pending.push_str(&line);
        pending.push('\n');
        if line.trim_end().ends_with(';') {
            let query = pending.trim().trim_end_matches(';').to_owned();
            pending.clear();
            if !query.is_empty() {
                match target.run(&query).await {
                    Ok(batches) => {
                        std::io::stdout()
                            .write_all(render_batches(&batches, format)?.as_bytes())?;
                    }
                    Err(e) => {
                        failures += 1;
                        eprintln!("error: {e:#}");
                    }
                }
            }
        }
        show_prompt(&pending);
    }
    if interactive {
        eprintln!();
    }
    if !pending.trim().is_empty() {
        bail!("the last query has no closing `;`: {}", pending.trim());
    }
    if failures > 0 {
        bail!("{failures} queries failed");
    }
    Ok(())
}
