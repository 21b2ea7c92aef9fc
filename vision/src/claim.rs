//! Claims: which worker holds an upload. A claim is an object created only
//! if absent (`claims/vision/<upload>/<n>.json`); it lapses when its lease
//! ends, or at once when its holder on this host has died, and the next
//! attempt takes number n + 1.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use hexroad_lake::object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutPayload, path::Path as StorePath,
};
use hexroad_wire::UploadId;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::{Error, Result};

/// Who claims: a worker on a host, in a process, for a lease.
#[derive(Debug, Clone)]
pub(crate) struct Claimant {
    pub worker: String,
    pub host: String,
    pub lease: Duration,
}

impl Claimant {
    /// This process on this host.
    pub fn here(lease: Duration) -> Self {
        let host = hostname();
        Self {
            worker: format!("{host}:{}", std::process::id()),
            host,
            lease,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claim {
    worker: String,
    host: String,
    pid: u32,
    expires_at: DateTime<Utc>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// What [`claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claimed {
    /// This worker holds the upload now, as attempt `attempt`.
    Taken { attempt: u32 },
    /// A live claim of another worker holds it.
    Held,
    /// `attempts` claims lapsed without a verdict (each holder died on it,
    /// or stalled past its lease):
    /// it is not tried again, so one poisonous upload cannot kill workers
    /// forever.
    Exhausted { attempts: u32 },
}

/// Takes the upload if no live claim holds it and fewer than `max_attempts`
/// earlier claims lapsed on it without a verdict. An attempt that ended in a
/// verdict (even `failed`, retried once the cause is fixed) is marked done by
/// [`finish`] and does not count.
pub(crate) async fn claim(
    store: &Arc<dyn ObjectStore>,
    who: &Claimant,
    upload: UploadId,
    now: DateTime<Utc>,
    max_attempts: u32,
) -> Result<Claimed> {
    let prefix = StorePath::from(format!("claims/vision/{upload}"));
    let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
    let mut latest: Option<(u32, StorePath)> = None;
    let (mut claims, mut done) = (0u32, 0u32);
    for meta in listed {
        let name = meta.location.filename().unwrap_or_default();
        if name.ends_with(".done") {
            done += 1;
            continue;
        }
        let n = name
            .strip_suffix(".json")
            .and_then(|f| f.parse::<u32>().ok());
        claims += u32::from(n.is_some());
        if let Some(n) = n
            && latest.as_ref().is_none_or(|(m, _)| n > *m)
        {
            latest = Some((n, meta.location));
        }
    }
    let next = match latest {
        None => 0,
        Some((n, location)) => {
            let bytes = store.get(&location).await?.bytes().await?;
            if let Ok(claim) = serde_json::from_slice::<Claim>(&bytes) {
                let holder_died = claim.host == who.host
                    && claim.pid != std::process::id()
                    && !process_alive(claim.pid);
                if claim.expires_at > now && !holder_died {
                    return Ok(Claimed::Held);
                }
                info!(%upload, previous = %claim.worker, "taking over a lapsed claim");
            }
            n + 1
        }
    };
    let lapsed = claims.saturating_sub(done);
    if lapsed >= max_attempts {
        return Ok(Claimed::Exhausted { attempts: lapsed });
    }
    let claim = Claim {
        worker: who.worker.clone(),
        host: who.host.clone(),
        pid: std::process::id(),
        expires_at: now
            + chrono::Duration::from_std(who.lease).unwrap_or(chrono::Duration::minutes(10)),
    };
    let body = serde_json::to_vec(&claim).map_err(|e| Error::Internal(e.to_string()))?;
    let key = prefix.clone().join(format!("{next:06}.json"));
    match store
        .put_opts(&key, PutPayload::from(body), PutMode::Create.into())
        .await
    {
        Ok(_) => Ok(Claimed::Taken { attempt: next }),
        Err(hexroad_lake::object_store::Error::AlreadyExists { .. }) => Ok(Claimed::Held),
        Err(e) => Err(e.into()),
    }
}

/// Marks attempt `attempt` as ended with a verdict, so it does not count
/// toward the attempt limit.
pub(crate) async fn finish(
    store: &Arc<dyn ObjectStore>,
    upload: UploadId,
    attempt: u32,
) -> Result<()> {
    let key = StorePath::from(format!("claims/vision/{upload}/{attempt:06}.done"));
    store.put(&key, PutPayload::from_static(b"{}")).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14: an upload that kills its worker was claimed again at once
    /// after every restart, forever. Claims that lapse without a verdict
    /// count; after the limit the upload is given up. Attempts that ended
    /// in a verdict do not count.
    #[tokio::test]
    async fn an_upload_is_given_up_after_its_attempts_lapse() {
        let dir = tempfile::tempdir().unwrap();
        let lake = hexroad_lake::Lake::open(&dir.path().to_string_lossy())
            .await
            .unwrap();
        let store = lake.blobs();
        let who = Claimant::here(Duration::from_secs(600));
        let upload = UploadId::new_random();
        let t0 = Utc::now();
        let hour = |h: i64| t0 + chrono::Duration::hours(h);

        // One attempt ends with a verdict: it does not count.
        assert_eq!(
            claim(&store, &who, upload, hour(0), 2).await.unwrap(),
            Claimed::Taken { attempt: 0 }
        );
        finish(&store, upload, 0).await.unwrap();
        // While a claim is live, others wait.
        assert_eq!(
            claim(&store, &who, upload, hour(1), 2).await.unwrap(),
            Claimed::Taken { attempt: 1 }
        );
        assert_eq!(
            claim(&store, &who, upload, hour(1), 2).await.unwrap(),
            Claimed::Held
        );
        // Two claims lapse without a verdict: given up.
        assert_eq!(
            claim(&store, &who, upload, hour(2), 2).await.unwrap(),
            Claimed::Taken { attempt: 2 }
        );
        assert_eq!(
            claim(&store, &who, upload, hour(3), 2).await.unwrap(),
            Claimed::Exhausted { attempts: 2 }
        );
    }
}
