//! Leases on uploads: one node at a time receives an upload's `PATCH`.

use std::time::Duration;

use async_nats::jetstream::kv::{CreateErrorKind, Store};

use crate::{Coordination, Error, Result, request};

/// Leases in a bucket whose entries expire `ttl` after their last renewal:
/// a node that dies holding one loses it within `ttl`, and a device resumes
/// on another node.
#[derive(Clone)]
pub struct Leases {
    bucket: Store,
    ttl: Duration,
}

/// A lease this process holds. Renew it more often than the lease time;
/// release it when done (dropping it unreleased lets it lapse).
#[derive(Debug)]
pub struct Lease {
    key: String,
    holder: String,
    revision: u64,
}

impl Coordination {
    /// The upload leases, each lapsing `ttl` after its last renewal.
    pub async fn leases(&self, ttl: Duration) -> Result<Leases> {
        Ok(Leases {
            bucket: self.bucket("leases", ttl, -1).await?,
            ttl,
        })
    }
}

fn valid(key: &str) -> Result<()> {
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '='))
    {
        return Err(Error::Invalid(format!("lease key {key:?}")));
    }
    Ok(())
}

impl Leases {
    /// How long a lease lasts unrenewed.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes the lease on `key` for `holder`, or says who holds it.
    pub async fn acquire(
        &self,
        key: &str,
        holder: &str,
    ) -> Result<std::result::Result<Lease, String>> {
        valid(key)?;
        match self.bucket.create(key, holder.to_owned().into()).await {
            Ok(revision) => Ok(Ok(Lease {
                key: key.to_owned(),
                holder: holder.to_owned(),
                revision,
            })),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                let held_by = match self.bucket.get(key).await {
                    Ok(Some(value)) => String::from_utf8_lossy(&value).into_owned(),
                    // Lapsed or released in between: the caller tries again.
                    Ok(None) | Err(_) => "another node".to_owned(),
                };
                Ok(Err(held_by))
            }
            Err(e) => Err(request("lease create")(e.to_string())),
        }
    }

    /// Extends `lease` by another lease time; fails if it lapsed and
    /// someone else took it meanwhile.
    pub async fn renew(&self, lease: &mut Lease) -> Result<()> {
        lease.revision = self
            .bucket
            .update(&lease.key, lease.holder.clone().into(), lease.revision)
            .await
            .map_err(|e| request("lease renew")(e.to_string()))?;
        Ok(())
    }

    /// Gives `lease` up, unless it already lapsed to someone else.
    pub async fn release(&self, lease: Lease) -> Result<()> {
        self.bucket
            .delete_expect_revision(&lease.key, Some(lease.revision))
            .await
            .map_err(|e| request("lease release")(e.to_string()))
    }
}
