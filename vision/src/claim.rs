//! Claims: which worker holds an upload. A claim is an object created only
//! if absent (`claims/vision/<upload>/<n>.json`); it lapses when its lease
//! ends, or at once when its holder on this host has died, and the next
//! attempt takes number n + 1.

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
    /// The kernel boot, PID namespace and start time of the holder: a PID
    /// means the same process only within one boot and one namespace, and
    /// only while its start time matches (PIDs are reused).
    #[serde(default)]
    process: ProcessIdentity,
}

/// What names a process beyond its PID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ProcessIdentity {
    boot_id: String,
    pid_namespace: String,
    /// Clock ticks after boot when the process started (`/proc/<pid>/stat`).
    started: u64,
}

impl ProcessIdentity {
    fn of(pid: u32) -> Option<Self> {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let pid_namespace = std::fs::read_link("/proc/self/ns/pid").ok()?;
        Some(Self {
            boot_id: boot_id.trim().to_owned(),
            pid_namespace: pid_namespace.to_string_lossy().into_owned(),
            started: start_time(pid)?,
        })
    }
}

/// Field 22 of `/proc/<pid>/stat`, read after the command name (which may
/// hold spaces and parentheses).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(19)?.parse().ok()
}

/// Whether the holder of `claim` is known dead: only decidable when it ran
/// in this boot and this PID namespace; otherwise its lease decides.
fn holder_died(claim: &Claim, who: &Claimant) -> bool {
    if claim.host != who.host || claim.pid == std::process::id() {
        return false;
    }
    let Some(here) = ProcessIdentity::of(std::process::id()) else {
        return false;
    };
    if claim.process.boot_id != here.boot_id || claim.process.pid_namespace != here.pid_namespace {
        return false;
    }
    start_time(claim.pid) != Some(claim.process.started)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
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

/// When a claim made during a pass that began at `pass_started` is made:
/// now, never the pass's start, or a claim taken late in a long pass would
/// be born expired.
pub(crate) fn claim_time(pass_started: DateTime<Utc>) -> DateTime<Utc> {
    Utc::now().max(pass_started)
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
                if claim.expires_at > now && !holder_died(&claim, who) {
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
    let body = claim_body(who, now)?;
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

/// This process's claim, good for a lease from `now`.
fn claim_body(who: &Claimant, now: DateTime<Utc>) -> Result<Vec<u8>> {
    let claim = Claim {
        worker: who.worker.clone(),
        host: who.host.clone(),
        pid: std::process::id(),
        expires_at: now
            + chrono::Duration::from_std(who.lease).unwrap_or(chrono::Duration::minutes(10)),
        process: ProcessIdentity::of(std::process::id()).unwrap_or_default(),
    };
    serde_json::to_vec(&claim).map_err(|e| Error::Internal(e.to_string()))
}

/// Extends attempt `attempt`'s lease to a full lease from `now`: a long
/// upload is held for as long as its worker is alive to renew it.
pub(crate) async fn renew(
    store: &Arc<dyn ObjectStore>,
    who: &Claimant,
    upload: UploadId,
    attempt: u32,
    now: DateTime<Utc>,
) -> Result<()> {
    let key = StorePath::from(format!("claims/vision/{upload}/{attempt:06}.json"));
    store
        .put(&key, PutPayload::from(claim_body(who, now)?))
        .await?;
    Ok(())
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

    async fn store() -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
        let dir = tempfile::tempdir().unwrap();
        let lake = hexroad_lake::Lake::open(&dir.path().to_string_lossy())
            .await
            .unwrap();
        (dir, lake.blobs())
    }

    fn other_worker(lease: Duration) -> Claimant {
        Claimant {
            worker: "elsewhere:1".into(),
            host: "elsewhere".into(),
            lease,
        }
    }

    /// Issue 15: a lease counted from the start of a pass: a claim taken
    /// 30 minutes into a backlog was born expired. Counted from the claim's
    /// own time, it holds.
    #[tokio::test]
    async fn a_claim_taken_late_in_a_pass_is_not_born_expired() {
        let (_dir, store) = store().await;
        let lease = Duration::from_secs(600);
        let who = Claimant::here(lease);
        let upload = UploadId::new_random();
        let pass_started = Utc::now() - chrono::Duration::minutes(30);
        let taken = claim(&store, &who, upload, claim_time(pass_started), 3).await;
        assert_eq!(taken.unwrap(), Claimed::Taken { attempt: 0 });
        let racer = claim(&store, &other_worker(lease), upload, Utc::now(), 3).await;
        assert_eq!(racer.unwrap(), Claimed::Held);
    }

    /// Issue 15: leases were never renewed, so an upload taking longer than
    /// one was processed twice. A renewed claim holds past its first lease.
    #[tokio::test]
    async fn a_renewed_claim_holds_past_its_first_lease() {
        let (_dir, store) = store().await;
        let lease = Duration::from_secs(600);
        let who = Claimant::here(lease);
        let upload = UploadId::new_random();
        let t0 = Utc::now();
        let at = |m: i64| t0 + chrono::Duration::minutes(m);
        assert_eq!(
            claim(&store, &who, upload, at(0), 3).await.unwrap(),
            Claimed::Taken { attempt: 0 }
        );
        renew(&store, &who, upload, 0, at(8)).await.unwrap();
        let racer = other_worker(lease);
        assert_eq!(
            claim(&store, &racer, upload, at(15), 3).await.unwrap(),
            Claimed::Held
        );
        assert_eq!(
            claim(&store, &racer, upload, at(19), 3).await.unwrap(),
            Claimed::Taken { attempt: 1 }
        );
    }

    /// Issue 15: liveness was `/proc/<pid>` exists, wrong after PID reuse
    /// and across PID namespaces. A claim whose PID now names another
    /// process (another start time) is dead; one from another boot or
    /// namespace is left to its lease.
    #[test]
    fn liveness_needs_the_same_process_not_the_same_pid() {
        let who = Claimant::here(Duration::from_secs(600));
        let here = ProcessIdentity::of(std::process::id()).unwrap();
        // PID 1 is alive in every namespace; its start time is not ours.
        let mut claim = Claim {
            worker: "gone".into(),
            host: who.host.clone(),
            pid: 1,
            expires_at: Utc::now() + chrono::Duration::hours(1),
            process: ProcessIdentity {
                started: here.started + 1,
                ..here.clone()
            },
        };
        if start_time(1) != Some(here.started + 1) {
            assert!(holder_died(&claim, &who), "PID 1 is another process now");
        }
        claim.process.boot_id = "another boot".into();
        assert!(
            !holder_died(&claim, &who),
            "another boot: the lease decides"
        );
        claim.process = ProcessIdentity {
            pid_namespace: "pid:[1]".into(),
            ..here
        };
        assert!(
            !holder_died(&claim, &who),
            "another namespace: the lease decides"
        );
    }

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
