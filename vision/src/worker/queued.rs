//! The worker fed by the NATS work queue: each message names one upload,
//! the message's ack wait is the worker's lease on it, and the message is
//! acknowledged only once the upload's verdict is in the lake. A slower
//! scan of the lake still runs beside it, for anything ingest could not
//! queue (NATS was down at that moment) or queued before this worker
//! existed. The object-store claims stay the correctness layer, so a
//! message delivered twice, or an upload found by both, is done once.

use std::time::{Duration, Instant};

use chrono::Utc;
use hexroad_coord::{Work, WorkQueue};
use hexroad_lake::ProcessingStatus;
use hexroad_wire::UploadId;
use tracing::{debug, info, warn};

use super::{AbortOnDrop, Step, Worker};

/// Most deliveries of one message; the claims bound real attempts long
/// before (`max_attempts`), this only stops a message circulating forever.
pub const MAX_DELIVERIES: i64 = 200;

/// How often the lake is scanned for work nobody queued.
const SCAN_EVERY: Duration = Duration::from_secs(30);

impl Worker {
    /// Takes uploads from `queue` until `shutdown` resolves, scanning the
    /// lake at the start and every half minute for what was not queued.
    pub async fn run_queued(
        mut self,
        queue: WorkQueue,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut next_scan = Instant::now();
        loop {
            if Instant::now() >= next_scan {
                match self.run_once(Utc::now()).await {
                    Ok(pass) if pass.processed + pass.rejected + pass.failed > 0 => {
                        info!(?pass, "vision scan found unqueued work");
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "vision scan failed; retrying"),
                }
                next_scan = Instant::now() + SCAN_EVERY;
            }
            let wait = next_scan
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(100), Duration::from_secs(5));
            tokio::select! {
                () = &mut shutdown => break,
                next = queue.next(wait) => match next {
                    Ok(Some(work)) => self.handle(work).await,
                    Ok(None) => {}
                    Err(e) => {
                        warn!(error = %e, "taking work from the queue; retrying");
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(self.config.poll_interval) => {}
                        }
                    }
                },
            }
        }
    }

    /// One delivery: the upload's verdict is stored and the message acked,
    /// or the message comes back later (track not yet there, another worker
    /// on it, a failure here).
    async fn handle(&mut self, work: Work) {
        let Ok(id) = work.upload.parse::<UploadId>() else {
            warn!(message = %work.upload, "a queued message that names no upload; dropped");
            settle(&work, Settle::Ack).await;
            return;
        };
        let upload = match self.pending().await {
            Ok(pending) => pending.into_iter().find(|u| u.upload_id == id),
            Err(e) => {
                warn!(upload_id = %id, error = %e, "reading the pending uploads");
                settle(&work, Settle::Later(backoff(work.delivered))).await;
                return;
            }
        };
        let Some(upload) = upload else {
            // Its verdict is stored already (a redelivery, or the scan).
            debug!(upload_id = %id, "queued upload already has a verdict");
            settle(&work, Settle::Ack).await;
            return;
        };
        info!(upload_id = %id, queued_ms = work.queued_for.as_millis() as u64, delivered = work.delivered, "took queued upload");
        let _progress = self.keep_in_progress(&work);
        let outcome = match self.step(&upload, Utc::now()).await {
            Ok(Step::Done(status)) => {
                if status != ProcessingStatus::Processed {
                    info!(upload_id = %id, status = status.as_str(), "queued upload settled");
                }
                Settle::Ack
            }
            Ok(Step::Waiting) => Settle::Later((self.config.track_wait / 8).min(SCAN_EVERY)),
            Ok(Step::Held | Step::FailedHere) => Settle::Later(self.config.lease.min(SCAN_EVERY)),
            Err(e) => {
                warn!(upload_id = %id, error = %e, delivered = work.delivered, "queued upload not settled; it comes back");
                Settle::Later(backoff(work.delivered))
            }
        };
        settle(&work, outcome).await;
    }

    /// Tells the queue every third of the ack wait that this worker is
    /// still on the message, until the guard is dropped.
    fn keep_in_progress(&self, work: &Work) -> AbortOnDrop {
        let progress = work.progress_handle();
        let every = (self.config.lease / 3).max(Duration::from_secs(1));
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = progress.report().await {
                    warn!(error = %e, "reporting progress on queued work");
                }
            }
        }))
    }
}

/// How a delivery ends.
enum Settle {
    Ack,
    Later(Duration),
}

async fn settle(work: &Work, how: Settle) {
    let result = match how {
        Settle::Ack => work.ack().await,
        Settle::Later(delay) => work.retry_after(delay).await,
    };
    if let Err(e) = result {
        // Unsettled, the message comes back after the ack wait; the lake
        // records the verdict once whatever happens.
        warn!(upload = %work.upload, error = %e, "settling queued work");
    }
}

/// The pause before a failed delivery comes back: doubling from 2 s, at
/// most five minutes.
fn backoff(delivered: i64) -> Duration {
    let exponent = u32::try_from(delivered.clamp(1, 9)).unwrap_or(1);
    Duration::from_secs(2u64.pow(exponent)).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(50), Duration::from_secs(300));
        assert_eq!(backoff(-3), Duration::from_secs(2));
    }
}
