//! Where analysts' queries run: on a runtime of their own, a few at a time.
//! A heavy query then competes with uploads only for the cores the operator
//! gave SQL, and a burst of queries is refused (429) instead of queued.

use std::sync::Arc;

use hexroad_lake::{Lake, QueryLimits, QueryOutput};
use tokio::sync::Semaphore;

/// The runtime and the slots queries take.
#[derive(Clone)]
pub struct QueryPool {
    slots: Arc<Semaphore>,
    max: usize,
    runtime: Arc<Runtime>,
}

/// A runtime that may be dropped from inside another one (tokio's own
/// panics there): it is shut down in the background instead.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Lowers the calling thread's priority to nice 10. Best effort: a failure
/// leaves the thread at the server's priority.
#[expect(
    unsafe_code,
    reason = "setpriority and gettid are only reachable through libc"
)]
fn yield_the_cpu() {
    // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS and
    // a thread id changes only that thread's nice value.
    let failed = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, u32::try_from(tid).unwrap_or(0), 10) != 0
    };
    if failed {
        tracing::debug!("could not lower a query thread's priority");
    }
}

/// Every query slot is taken.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("{running} queries are running, the most allowed at once; retry shortly")]
pub struct Busy {
    pub running: usize,
}

/// Aborts the query when the request that asked for it goes away.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl QueryPool {
    /// `max_concurrent` queries at once on `threads` worker threads, which
    /// the kernel schedules after the server's own (nice 10): a core that
    /// both want goes to uploads first.
    pub fn new(max_concurrent: usize, threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("hexroad-sql")
            .on_thread_start(yield_the_cpu)
            .enable_all()
            .build()?;
        Ok(Self {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max: max_concurrent,
            runtime: Arc::new(Runtime(Some(runtime))),
        })
    }

    /// Runs `work` on the query runtime if a slot is free. The slot is held
    /// until the work ends, and the work is stopped if the caller stops
    /// waiting for it.
    pub async fn run<T, F>(&self, work: F) -> Result<T, Busy>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            return Err(Busy { running: self.max });
        };
        let Some(runtime) = &self.runtime.0 else {
            return Err(Busy { running: self.max });
        };
        let mut task = AbortOnDrop(runtime.spawn(async move {
            let out = work.await;
            drop(slot);
            out
        }));
        match (&mut task.0).await {
            Ok(out) => Ok(out),
            // Aborted only by our own drop; a panic in a query is a bug
            // that must not take the server down with it.
            Err(e) => {
                tracing::error!(error = %e, "a query task ended abnormally");
                Err(Busy { running: self.max })
            }
        }
    }

    /// Runs one analyst query within `limits`. The time limit is kept from
    /// this side too: a query whose operators never yield can hold the
    /// query runtime's threads, and with them its own timer, but not this
    /// one; it is aborted at its next yield.
    pub async fn query(
        &self,
        lake: &Arc<Lake>,
        sql: &str,
        limits: &QueryLimits,
        role: hexroad_lake::Role,
    ) -> Result<hexroad_lake::Result<QueryOutput>, Busy> {
        let timeout = limits.timeout;
        let (lake, sql, limits) = (Arc::clone(lake), sql.to_owned(), limits.clone());
        let work = self.run(async move { lake.query_read_only(&sql, &limits, role).await });
        match tokio::time::timeout(timeout + std::time::Duration::from_millis(250), work).await {
            Ok(done) => done,
            Err(_) => Ok(Err(hexroad_lake::Error::QueryTimeout {
                limit_s: timeout.as_secs_f64(),
            })),
        }
    }
}
