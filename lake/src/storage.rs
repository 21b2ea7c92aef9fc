//! Data locations on S3 and S3-compatible servers (`s3://bucket/prefix`).
//!
//! Delta commits and the vision workers' claims both rest on one promise of
//! the store: a create-if-absent PUT (`If-None-Match: *`) of a key that
//! exists is refused, atomically. Several S3-compatible servers accept the
//! header and ignore it, which would let two writers both "win" one commit
//! version; [`probe_create_if_absent`] checks the promise before a lake on
//! such a store is used.

use std::sync::Arc;

use deltalake::logstore::{DeltaIOStorageBackend, IORuntime};
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::{Error, Result};

/// How to reach an `s3://` data location (`[storage]`). A field left unset
/// comes from the standard environment variables every S3 tool reads
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`); a local folder ignores it.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSettings {
    /// The server's URL, for a store other than AWS (`http://127.0.0.1:8333`).
    pub endpoint: Option<String>,
    /// The region requests are signed for.
    pub region: Option<String>,
    /// The key requests are signed with.
    pub access_key_id: Option<String>,
    /// Its secret; better given in `AWS_SECRET_ACCESS_KEY` than in a file.
    #[serde(skip_serializing)]
    pub secret_access_key: Option<String>,
    /// Allows a plain-HTTP endpoint (a server on loopback or a private
    /// network); refused otherwise.
    pub allow_http: Option<bool>,
    /// Sends requests unsigned, to a server that allows anonymous access.
    pub skip_signature: Option<bool>,
}

impl std::fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSettings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "…"),
            )
            .field("allow_http", &self.allow_http)
            .field("skip_signature", &self.skip_signature)
            .finish()
    }
}

/// Whether `url` names an S3 bucket (`s3://`, or Hadoop's `s3a://`).
pub(crate) fn is_s3(url: &Url) -> bool {
    matches!(url.scheme(), "s3" | "s3a")
}

/// Whether `location` is an S3 URL rather than a local path.
pub fn is_s3_location(location: &str) -> bool {
    Url::parse(location).is_ok_and(|url| is_s3(&url))
}

/// The bucket's store for `root` (`s3://bucket/prefix/`), rooted at the
/// bucket: create-if-absent PUTs are sent with `If-None-Match: *`.
pub(crate) fn s3_store(root: &Url, settings: &StorageSettings) -> Result<Arc<dyn ObjectStore>> {
    let invalid = |reason: String| Error::InvalidLocation {
        location: root.to_string(),
        reason,
    };
    let bucket = root
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| invalid("names no bucket (s3://bucket/prefix)".into()))?;
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_conditional_put(S3ConditionalPut::ETagMatch);
    if let Some(endpoint) = &settings.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = &settings.region {
        builder = builder.with_region(region);
    }
    if let Some(key) = &settings.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &settings.secret_access_key {
        builder = builder.with_secret_access_key(secret);
    }
    if let Some(allow) = settings.allow_http {
        builder = builder.with_allow_http(allow);
    }
    if let Some(skip) = settings.skip_signature {
        builder = builder.with_skip_signature(skip);
    }
    let store = builder.build().map_err(|e| invalid(e.to_string()))?;
    // Every request runs on one long-lived IO runtime: an HTTP connection
    // belongs to the runtime that opened it, and delta-rs reads logs on
    // runtimes of its own, so a pooled connection reused from another one
    // would hang until its timeout (seen as 30 s stalls per checkpoint).
    Ok(Arc::new(DeltaIOStorageBackend::new(
        store,
        IORuntime::default(),
    )))
}

/// Creates one key twice with create-if-absent and fails unless the store
/// refuses the second; removes the key after. `prefix` is the lake's path
/// in the bucket.
pub(crate) async fn probe_create_if_absent(
    store: &dyn ObjectStore,
    prefix: &Path,
    location: &str,
) -> Result<()> {
    let key: Path = prefix
        .parts()
        .chain(Path::from(format!("_probe/{}", uuid::Uuid::new_v4())).parts())
        .collect();
    let create = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let blob_err = |source| Error::Blob {
        key: key.to_string(),
        source,
    };
    store
        .put_opts(&key, PutPayload::from_static(b"first"), create.clone())
        .await
        .map_err(blob_err)?;
    let second = store
        .put_opts(&key, PutPayload::from_static(b"second"), create)
        .await;
    let kept = store.get(&key).await.map_err(blob_err)?.bytes().await;
    // Best effort: a probe key left behind harms nothing.
    let _ = store.delete(&key).await;
    match second {
        Err(object_store::Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(blob_err(e)),
        Ok(_) => {
            return Err(Error::InvalidLocation {
                location: location.to_owned(),
                reason: "the store accepted a create-if-absent PUT (If-None-Match: *) of a key \
                         that already existed: concurrent Delta commits and vision claims would \
                         overwrite each other there, so hexroad will not write to it"
                    .into(),
            });
        }
    }
    match kept {
        Ok(bytes) if bytes.as_ref() == b"first" => Ok(()),
        Ok(_) => Err(Error::InvalidLocation {
            location: location.to_owned(),
            reason: "the store refused a second create-if-absent PUT but kept its bytes".into(),
        }),
        Err(e) => Err(blob_err(e)),
    }
}

/// Lets delta-rs commit to `root`'s scheme through its default log store:
/// each commit a create-if-absent PUT of the next version's log entry,
/// which the probe above has shown this store honours. (delta-rs's own S3
/// support would add the AWS SDK and a DynamoDB lock, needless where the
/// store has conditional writes.)
pub(crate) fn register_delta_log_store(root: &Url) {
    let registry = deltalake::logstore::logstore_factories();
    let (Ok(scheme), Ok(file)) = (
        Url::parse(&format!("{}://", root.scheme())),
        Url::parse("file://"),
    ) else {
        return;
    };
    if registry.contains_key(&scheme) {
        return;
    }
    let default = registry.get(&file).map(|entry| Arc::clone(entry.value()));
    if let Some(default) = default {
        registry.insert(scheme, default);
    }
}

/// The bucket's store and the key an `s3://bucket/key` URL names, reached
/// as `settings` say: for files written beside a lake (a map archive a
/// CDN serves).
pub fn object_at(
    location: &str,
    settings: &StorageSettings,
) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let invalid = |reason: String| Error::InvalidLocation {
        location: location.to_owned(),
        reason,
    };
    let url = Url::parse(location).map_err(|e| invalid(e.to_string()))?;
    if !is_s3(&url) {
        return Err(invalid("expected s3://bucket/key".into()));
    }
    let key = Path::from_url_path(url.path()).map_err(|e| invalid(e.to_string()))?;
    if key.as_ref().is_empty() {
        return Err(invalid("names no key after the bucket".into()));
    }
    Ok((s3_store(&url, settings)?, key))
}
