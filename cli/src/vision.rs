//! `hexroad vision`: a standalone vision worker, and the one `serve` runs.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use hexroad_lake::Lake;
use hexroad_vision::{VisionConfig, Worker};
use tokio_util::sync::CancellationToken;
use tracing::info;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data location: a folder or an object-store URL [default: ./data]
    #[arg(long)]
    data: Option<String>,
    /// A TOML settings file (its [vision] section is used).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Process what is pending now, then exit.
    #[arg(long)]
    once: bool,
    /// Keep one frame per this many metres travelled [default: 3]
    #[arg(long)]
    sample_distance: Option<f64>,
}

/// Starts a worker on its own task; it stops when `stop` turns true. With
/// `coordination` it takes its work from the NATS queue, else it follows
/// the lake's commits.
pub async fn spawn(
    lake: Arc<Lake>,
    mut config: VisionConfig,
    scratch: PathBuf,
    coordination: Option<&hexroad_coord::Coordination>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let queue = match coordination {
        Some(c) => Some(crate::cluster::work_queue(c, &config).await?),
        None => None,
    };
    // Uploaded video is decoded by this binary's `decode-video`, caged.
    config.decoder = Some(std::env::current_exe().context("locating the hexroad binary")?);
    let worker = tokio::task::spawn_blocking(move || Worker::new(lake, config, scratch))
        .await
        .context("loading the vision models")?;
    info!(
        worker = worker.id(),
        queued = queue.is_some(),
        "vision worker started"
    );
    Ok(match queue {
        Some(queue) => tokio::spawn(worker.run_queued(queue, stop.cancelled_owned())),
        None => tokio::spawn(worker.run(stop.cancelled_owned())),
    })
}

pub async fn run(args: Args) -> Result<()> {
    let mut settings = crate::settings::load_for_data(args.config.as_deref(), args.data)?;
    if let Some(d) = args.sample_distance {
        settings.vision.sample_distance_m = d;
        settings
            .vision
            .validate()
            .map_err(|e| e.within("vision"))
            .context("--sample-distance")?;
    }
    let lake = Arc::new(
        Lake::open_with(&settings.data, &settings.storage)
            .await
            .with_context(|| format!("opening data location {}", settings.data))?,
    );
    let mut config = settings.vision.clone();
    let scratch = settings.scratch_dir()?;
    if args.once {
        config.decoder = Some(std::env::current_exe().context("locating the hexroad binary")?);
        let mut worker = tokio::task::spawn_blocking(move || Worker::new(lake, config, scratch))
            .await
            .context("loading the vision models")?;
        let pass = worker.run_once(chrono::Utc::now()).await?;
        println!(
            "{} processed, {} rejected, {} failed, {} left for later",
            pass.processed, pass.rejected, pass.failed, pass.skipped
        );
        if let Some(e) = worker.load_error() {
            anyhow::bail!("the vision models did not load, nothing was published: {e}");
        }
        return Ok(());
    }
    let stop = crate::shutdown::on_signal();
    // A standalone worker writes frames: it checkpoints what it writes too.
    let maintenance = tokio::spawn(
        Arc::clone(&lake).maintain_until(settings.lake.clone(), stop.clone().cancelled_owned()),
    );
    let coordination = settings.cluster.connect().await?;
    let handle = spawn(lake, config, scratch, coordination.as_ref(), stop.clone()).await?;
    let _ = handle.await;
    stop.cancel();
    let _ = maintenance.await;
    Ok(())
}
