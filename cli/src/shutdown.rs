//! The one shutdown signal of every long-running command.

use tokio_util::sync::CancellationToken;

/// A token cancelled at the first Ctrl-C (SIGINT) or SIGTERM, so `serve` and
/// `vision` stop the same way under a terminal and under a supervisor.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        signalled().await;
        tracing::info!("stopping");
        cancel.cancel();
    });
    token
}

async fn signalled() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
