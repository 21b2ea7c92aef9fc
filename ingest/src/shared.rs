//! What several ingest nodes on one lake share, through NATS JetStream
//! (`hexroad-coord`): the nonces of signed requests, a lease per upload
//! being received, the vision work queue; and the devices, which each node
//! follows from the `devices` table's commits. On one machine none of this
//! exists and the in-process state is the whole truth.

use std::sync::Arc;
use std::time::Duration;

use hexroad_coord::{Lease, Leases, NonceStore, Spent, WorkQueue};
use hexroad_wire::UploadId;
use tracing::warn;

use crate::ApiError;

/// The shared parts one ingest node uses.
pub struct Shared {
    /// This node's name, recorded in the leases it holds.
    pub node: String,
    pub nonces: NonceStore,
    pub leases: Leases,
    /// Where accepted videos and frame bundles are queued for the vision
    /// workers (without one they find them in the lake).
    pub queue: Option<WorkQueue>,
    /// How often the devices table is followed.
    pub device_refresh: Duration,
}

/// NATS unreachable (the replay check, an upload lease): a pause for the
/// device, never a pass.
fn unavailable(what: &str, e: &hexroad_coord::Error) -> ApiError {
    warn!(error = %e, "{what}: NATS failed; the device is asked to retry");
    ApiError::unavailable(
        "coordination_unavailable",
        format!("{what} is unavailable for a moment (NATS); retry"),
        2,
    )
}

impl Shared {
    /// Spends a nonce across every node; a replay is refused whichever
    /// node it reaches.
    pub(crate) async fn spend(&self, device: &str, nonce: &str) -> Result<(), ApiError> {
        match self.nonces.spend(device, nonce).await {
            Ok(Spent::Fresh) => Ok(()),
            Ok(Spent::Replayed) => Err(ApiError::unauthorized(
                "replayed",
                format!("nonce {nonce:?} was already used: replayed requests are refused"),
            )),
            Ok(Spent::Full) => Err(ApiError::too_many(
                "busy",
                "the shared replay store holds its limit of recent nonces; retry later",
                1,
            )),
            Err(e) => Err(unavailable("the replay check", &e)),
        }
    }

    /// Takes the lease on receiving `upload`, renewed until the returned
    /// guard is dropped. Another node holding it is a pause for the device:
    /// that node is writing it, or died and its lease is lapsing.
    pub(crate) async fn receive(&self, upload: UploadId) -> Result<UploadLease, ApiError> {
        let key = upload.to_string();
        match self.leases.acquire(&key, &self.node).await {
            Ok(Ok(lease)) => Ok(UploadLease::keep(self.leases.clone(), lease)),
            Ok(Err(holder)) => {
                let lapse = self.leases.ttl().as_secs().max(1);
                Err(ApiError::unavailable(
                    "upload_busy",
                    format!(
                        "upload {upload} is being received by {holder}; \
                         its lease lapses within {lapse} s if that node is gone"
                    ),
                    lapse.div_ceil(2),
                ))
            }
            Err(e) => Err(unavailable("the upload lease", &e)),
        }
    }

    /// Queues an accepted upload for the vision workers. A failure is only
    /// logged: the upload is in the lake, where the workers' slower scan
    /// finds what was never queued.
    pub(crate) async fn queue_for_vision(&self, upload: UploadId) {
        if let Some(queue) = &self.queue
            && let Err(e) = queue.publish(&upload.to_string()).await
        {
            warn!(upload_id = %upload, error = %e, "not queued for vision; the workers' scan will find it");
        }
    }
}

/// A lease on one upload, renewed every third of its time by a task of its
/// own, and released when dropped.
pub(crate) struct UploadLease {
    renewer: tokio::task::JoinHandle<()>,
    leases: Leases,
    lease: Arc<tokio::sync::Mutex<Option<Lease>>>,
}

impl UploadLease {
    fn keep(leases: Leases, lease: Lease) -> Self {
        let lease = Arc::new(tokio::sync::Mutex::new(Some(lease)));
        let every = (leases.ttl() / 3).max(Duration::from_millis(200));
        let renewer = tokio::spawn({
            let (leases, lease) = (leases.clone(), Arc::clone(&lease));
            async move {
                loop {
                    tokio::time::sleep(every).await;
                    let mut held = lease.lock().await;
                    let Some(current) = held.as_mut() else { return };
                    if let Err(e) = leases.renew(current).await {
                        warn!(error = %e, "renewing an upload lease");
                    }
                }
            }
        });
        Self {
            renewer,
            leases,
            lease,
        }
    }
}

impl Drop for UploadLease {
    fn drop(&mut self) {
        self.renewer.abort();
        let (leases, lease) = (self.leases.clone(), Arc::clone(&self.lease));
        tokio::spawn(async move {
            if let Some(held) = lease.lock().await.take()
                && let Err(e) = leases.release(held).await
            {
                // It lapses on its own within the lease time.
                warn!(error = %e, "releasing an upload lease");
            }
        });
    }
}
