//! `hexroad serve`: the ingest service, the vision worker, the map and SQL
//! on a data location, or some of them (`--role`): processes with different
//! roles share one location and learn of each other's work from the lake's
//! commits, so each tier can run on its own machines.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use hexroad_ingest::{Ingest, app, system_clock};
use hexroad_lake::Lake;
use tracing::info;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data location: a folder or an object-store URL [default: ./data]
    #[arg(long)]
    data: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long)]
    listen: Option<String>,
    /// Address for Arrow Flight SQL; "" for none [default: 127.0.0.1:50051]
    #[arg(long)]
    flight_listen: Option<String>,
    /// A TOML settings file (see hexroad.example.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// What this process does, comma-separated: ingest (uploads, devices,
    /// staging sweeps, table maintenance), vision (the frame worker), tiles
    /// (the map), sql (SQL over HTTP and Flight SQL), or all [default: all]
    #[arg(long, value_delimiter = ',')]
    role: Vec<Role>,
}

/// One tier of hexroad, as `--role` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Ingest,
    Vision,
    Tiles,
    Sql,
    All,
}

/// The tiers one process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Roles {
    ingest: bool,
    vision: bool,
    tiles: bool,
    sql: bool,
}

impl Roles {
    /// Every tier when none or `all` is named.
    fn from_flags(flags: &[Role]) -> Self {
        let all = flags.is_empty() || flags.contains(&Role::All);
        let has = |role| all || flags.contains(&role);
        Self {
            ingest: has(Role::Ingest),
            vision: has(Role::Vision),
            tiles: has(Role::Tiles),
            sql: has(Role::Sql),
        }
    }

    /// The roles as `ingest,tiles`, for the line a person waits for.
    fn names(self) -> String {
        let named = [
            (self.ingest, "ingest"),
            (self.vision, "vision"),
            (self.tiles, "tiles"),
            (self.sql, "sql"),
        ];
        let on: Vec<&str> = named
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        on.join(",")
    }
}

pub async fn run(args: Args) -> Result<()> {
    let roles = Roles::from_flags(&args.role);
    let mut settings = crate::settings::load_for_data(args.config.as_deref(), args.data)?;
    if let Some(listen) = args.listen {
        settings.listen = listen;
    }
    if let Some(listen) = args.flight_listen {
        settings.sql.flight_listen = listen;
    }
    if roles.vision && !settings.vision.enabled && !roles.ingest {
        anyhow::bail!(
            "--role vision runs the frame worker, which the settings turn off (vision.enabled = false)"
        );
    }
    let lake = Arc::new(
        Lake::open_with(&settings.data, &settings.storage)
            .await
            .with_context(|| format!("opening data location {}", settings.data))?,
    );
    // One signal stops everything: the HTTP server drains, then Flight SQL,
    // the tile watcher and the vision worker end their current step.
    let stop = crate::shutdown::on_signal();
    let listener = tokio::net::TcpListener::bind(&settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let scratch = settings.scratch_dir()?;
    let mut sql = settings.sql.service(&scratch)?;
    let flight_listener = if !roles.sql || settings.sql.flight_listen.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&settings.sql.flight_listen)
            .await
            .with_context(|| format!("listening on {} (Flight SQL)", settings.sql.flight_listen))?;
        Some(listener)
    };
    let flight_addr = flight_listener
        .as_ref()
        .map(tokio::net::TcpListener::local_addr)
        .transpose()?;
    let mut ingest_config = settings.ingest.clone();
    if ingest_config.public_authority.is_empty() {
        ingest_config.public_authority = public_authority(&settings.tiles.public_url, addr)?;
    }
    // SQL over HTTP answers only requests addressed to the public host.
    sql.authority = Some(ingest_config.public_authority.clone());
    let mut tasks = Vec::new();
    let mut router = axum::Router::new();
    // Only ingest and vision coordinate; the map and SQL read the lake.
    let coordination = if roles.ingest || roles.vision {
        settings.cluster.connect().await?
    } else {
        None
    };
    if roles.ingest {
        let shared = match &coordination {
            Some(c) => Some(
                crate::cluster::ingest_shared(
                    &settings.cluster,
                    c,
                    &ingest_config,
                    &settings.vision,
                )
                .await?,
            ),
            None => None,
        };
        let state = Ingest::open(
            Arc::clone(&lake),
            ingest_config,
            system_clock(),
            scratch.clone(),
            shared,
        )
        .await?;
        tasks.push(tokio::spawn(
            Arc::clone(&state).run_sweeper(stop.clone().cancelled_owned()),
        ));
        tasks.push(tokio::spawn(
            Arc::clone(&state).follow_devices(stop.clone().cancelled_owned()),
        ));
        // Checkpoints, compaction and log cleanup, off the commit path.
        tasks.push(tokio::spawn(Arc::clone(&lake).maintain_until(
            settings.lake.clone(),
            stop.clone().cancelled_owned(),
        )));
        router = router.merge(app(state));
    } else {
        router = router.route("/healthz", axum::routing::get(|| async { "ok\n" }));
    }
    let vision = if roles.vision && settings.vision.enabled {
        Some(
            crate::vision::spawn(
                Arc::clone(&lake),
                settings.vision.clone(),
                scratch,
                coordination.as_ref(),
                stop.clone(),
            )
            .await?,
        )
    } else {
        None
    };
    // The one line a person or a script waits for.
    let serving = match flight_addr {
        Some(flight) => format!("http://{addr} and grpc://{flight} (Flight SQL)"),
        None => format!("http://{addr}"),
    };
    println!(
        "hexroad serving on {serving} (data: {}; roles: {})",
        lake.root(),
        roles.names()
    );
    info!(%addr, flight = ?flight_addr, data = %lake.root(), roles = %roles.names(), "serving");
    let flight = flight_listener.map(|listener| {
        let lake = Arc::clone(&lake);
        let sql = sql.clone();
        let stopping = stop.clone().cancelled_owned();
        tokio::spawn(hexroad_sql::flight::serve(lake, sql, listener, stopping))
    });
    if roles.tiles {
        let mut tiles_config = settings.tiles.clone();
        if tiles_config.public_url.is_empty() {
            tiles_config.public_url = format!("http://{addr}");
        }
        let tiles = Arc::new(
            hexroad_tiles::Tiles::new(Arc::clone(&lake), tiles_config)
                .await
                .context("starting the tile service")?,
        );
        // New frames, whichever process committed them, reach the map
        // through the lake's commits.
        tasks.push(tokio::spawn(Arc::clone(&tiles).watch(stop.clone())));
        router = router.merge(hexroad_tiles::http::router(tiles));
    }
    if roles.sql {
        router = router.merge(hexroad_sql::http::router(Arc::clone(&lake), sql));
    }
    hexroad_http::serve(
        listener,
        router,
        settings.server,
        stop.clone().cancelled_owned(),
    )
    .await
    .context("serving")?;
    // Should the server end on its own, the others stop with it.
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    if let Some(flight) = flight {
        match flight.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "Flight SQL stopped"),
            Err(e) => tracing::error!(error = %e, "Flight SQL task"),
        }
    }
    if let Some(worker) = vision {
        let _ = worker.await;
    }
    info!("stopped");
    Ok(())
}

/// The `host[:port]` devices sign for when `ingest.public_authority` is not
/// set: that of `tiles.public_url`, else the address listened on, which must
/// then be one a device can reach.
fn public_authority(public_url: &str, addr: std::net::SocketAddr) -> Result<String> {
    if let Some(rest) = public_url.split_once("://").map(|(_, rest)| rest) {
        let authority = rest.split('/').next().unwrap_or_default();
        if !authority.is_empty() {
            return Ok(authority.to_ascii_lowercase());
        }
    }
    if addr.ip().is_unspecified() {
        anyhow::bail!(
            "listening on {addr}, every interface: set ingest.public_authority (or \
             tiles.public_url) to the host[:port] devices sign for"
        );
    }
    Ok(addr.to_string())
}
