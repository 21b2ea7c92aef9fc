//! The nonces of signed requests, shared by every ingest node.

use std::time::Duration;

use async_nats::jetstream::kv::{CreateErrorKind, Store};
use sha2::{Digest, Sha256};

use crate::{Coordination, Result, request};

/// Whether a nonce was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spent {
    /// First use: the request may go on.
    Fresh,
    /// This device used this nonce within the window: a replay.
    Replayed,
    /// The bucket holds its limit of nonces: refuse for now, not forever.
    Full,
}

/// Nonces held for the signature window, one key per (device, nonce), in a
/// bucket whose entries expire when the window has passed: a replay is a
/// create that finds the key present, on whichever node it lands.
#[derive(Clone)]
pub struct NonceStore {
    bucket: Store,
    jetstream: async_nats::jetstream::Context,
    stream: String,
}

/// What one held nonce costs the bucket, on average, with its overhead.
const BYTES_PER_NONCE: i64 = 160;

impl Coordination {
    /// The shared nonce store, holding each nonce for `window` and at most
    /// `max_held` nonces in all (a flood is refused, never forgotten early).
    pub async fn nonces(&self, window: Duration, max_held: usize) -> Result<NonceStore> {
        let max_bytes = i64::try_from(max_held)
            .unwrap_or(i64::MAX / BYTES_PER_NONCE)
            .saturating_mul(BYTES_PER_NONCE);
        let bucket = self.bucket("nonces", window, max_bytes).await?;
        Ok(NonceStore {
            stream: format!("KV_{}", self.named("nonces")),
            jetstream: self.jetstream.clone(),
            bucket,
        })
    }
}

/// The bucket key of a device's nonce: hashed, because keys allow few
/// characters and a nonce is whatever the signer chose.
fn key(device: &str, nonce: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(device.as_bytes());
    hash.update([0]);
    hash.update(nonce.as_bytes());
    hex::encode(&hash.finalize()[..20])
}

impl NonceStore {
    /// Spends `nonce` for `device`: [`Spent::Fresh`] exactly once within
    /// the window, across every node.
    pub async fn spend(&self, device: &str, nonce: &str) -> Result<Spent> {
        match self
            .bucket
            .create(key(device, nonce), Default::default())
            .await
        {
            Ok(_) => Ok(Spent::Fresh),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(Spent::Replayed),
            Err(e) if e.to_string().contains("maximum bytes") => Ok(Spent::Full),
            Err(e) => Err(request("nonce create")(e.to_string())),
        }
    }

    /// Nonces held now, for the metrics.
    pub async fn held(&self) -> Result<u64> {
        let mut stream = self
            .jetstream
            .get_stream(&self.stream)
            .await
            .map_err(|e| request("nonce status")(e.to_string()))?;
        let info = stream
            .info()
            .await
            .map_err(|e| request("nonce status")(e.to_string()))?;
        Ok(info.state.messages)
    }
}

#[cfg(test)]
mod tests {
    use super::key;

    #[test]
    fn keys_part_devices_and_nonces() {
        assert_ne!(key("a", "bc"), key("ab", "c"));
        assert_eq!(key("a", "b"), key("a", "b"));
        assert_eq!(key("a", "b").len(), 40);
    }
}
