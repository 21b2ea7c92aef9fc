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

/// Takes the upload if no live claim holds it.
pub(crate) async fn claim(
    store: &Arc<dyn ObjectStore>,
    who: &Claimant,
    upload: UploadId,
    now: DateTime<Utc>,
) -> Result<bool> {
    let prefix = StorePath::from(format!("claims/vision/{upload}"));
    let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
    let mut latest: Option<(u32, StorePath)> = None;
    for meta in listed {
        let n = meta
            .location
            .filename()
            .and_then(|f| f.strip_suffix(".json"))
            .and_then(|f| f.parse::<u32>().ok());
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
                    return Ok(false);
                }
                info!(%upload, previous = %claim.worker, "taking over a lapsed claim");
            }
            n + 1
        }
    };
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
        Ok(_) => Ok(true),
        Err(hexroad_lake::object_store::Error::AlreadyExists { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
