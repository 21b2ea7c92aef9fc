//! Coordination of several hexroad processes on one lake, through NATS
//! JetStream: well-known parts instead of home-made ones.
//!
//! - [`NonceStore`]: the nonces of signed requests, held for the signature
//!   window in a key-value bucket whose create-if-absent refuses a replay
//!   whichever ingest node it reaches;
//! - [`Leases`]: who is receiving a tus `PATCH` for an upload, so two nodes
//!   never write one upload at once, and a dead node's lease lapses;
//! - [`WorkQueue`]: accepted videos and frame bundles for the vision
//!   workers, pulled with the ack wait as each worker's lease and
//!   redelivered when a worker dies.
//!
//! Correctness stays in the lake (object-store claims, Delta application
//! transactions): a message delivered twice adds nothing there. With no
//! NATS configured a single machine runs exactly as before, on in-process
//! state.

mod leases;
mod nonces;
mod queue;

use std::time::Duration;

pub use leases::{Lease, Leases};
pub use nonces::{NonceStore, Spent};
pub use queue::{Progress, Work, WorkQueue};

/// Why talking to NATS failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    /// A bucket, stream or consumer could not be created or opened.
    #[error("setting up JetStream {what}: {message}")]
    Setup { what: String, message: String },
    /// A request to JetStream failed (the server is down, or refused it).
    #[error("NATS JetStream {what}: {message}")]
    Request { what: &'static str, message: String },
    /// A name that NATS cannot use.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

fn request(what: &'static str) -> impl Fn(String) -> Error {
    move |message| Error::Request { what, message }
}

/// Whether `prefix` can name buckets and streams: letters, digits, `_`, `-`.
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// One connection to NATS, and the JetStream context on it. Every bucket
/// and stream is named under `prefix`, so several deployments can share
/// one NATS.
#[derive(Clone)]
pub struct Coordination {
    jetstream: async_nats::jetstream::Context,
    prefix: String,
}

impl std::fmt::Debug for Coordination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordination")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Coordination {
    /// Connects to `url` (`nats://host:port`, several comma-separated for a
    /// NATS cluster), naming this process `name` in the server's monitoring.
    /// The client reconnects on its own after an outage; requests made
    /// meanwhile fail and the caller answers "try again".
    pub async fn connect(url: &str, name: &str, prefix: &str) -> Result<Self> {
        if !valid_prefix(prefix) {
            return Err(Error::Invalid(format!(
                "the NATS prefix {prefix:?} must be letters, digits, '_' or '-'"
            )));
        }
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(5)))
            .max_reconnects(None)
            .connect(url)
            .await
            .map_err(|source| Error::Connect {
                url: url.to_owned(),
                source,
            })?;
        Ok(Self {
            jetstream: async_nats::jetstream::new(client),
            prefix: prefix.to_owned(),
        })
    }

    /// The bucket, stream or subject `name` under this deployment's prefix.
    fn named(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix)
    }

    /// A key-value bucket whose entries expire `max_age` after their last
    /// write, made if missing (and its limits brought up to date if not).
    async fn bucket(
        &self,
        name: &str,
        max_age: Duration,
        max_bytes: i64,
    ) -> Result<async_nats::jetstream::kv::Store> {
        let config = async_nats::jetstream::kv::Config {
            bucket: self.named(name),
            description: format!("hexroad {name}"),
            history: 1,
            max_age,
            max_bytes,
            ..Default::default()
        };
        self.jetstream
            .create_or_update_key_value(config)
            .await
            .map_err(|e| Error::Setup {
                what: format!("key-value bucket {}", self.named(name)),
                message: e.to_string(),
            })
    }
}
