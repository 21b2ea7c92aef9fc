//! The lake on an object store: Delta tables, raw blobs, and the idempotent
//! commit of one upload's rows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, ObjectStore};
use hexroad_wire::IdError;
use tracing::{debug, info};
use url::Url;

use crate::columns;

mod compact;
pub(crate) use compact::uploads_properties;
mod durable;
mod group;
mod inflight;
mod latest;
pub use latest::CHECKPOINT_LOOK;
mod maintain;
mod once;
mod recent;
use crate::schema::{self, TableName};
use crate::{
    DeviceId, DeviceRecord, DeviceStatus, Error, GnssPoint, Result, TelemetrySample, UploadId,
    UploadRecord, UploadStatus,
};
pub use maintain::{Maintained, Maintenance};
pub use once::EpochRows;
pub use recent::RECENT_UPLOADS;

/// What [`Lake::commit_upload`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CommitOutcome {
    /// The upload's rows were written now; the record is what was stored
    /// (its status may have become `Duplicate`).
    Committed(UploadRecord),
    /// This upload, or the same bytes from the same device, was already
    /// stored; nothing was added. Carries the stored upload's summary.
    AlreadyStored(UploadSummary),
}

/// What the lake remembers of each stored upload without reading the table.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadSummary {
    pub upload_id: UploadId,
    pub device_id: DeviceId,
    pub sha256: String,
    pub bytes: u64,
    pub status: UploadStatus,
    pub reject_reason: Option<String>,
}

impl From<&UploadRecord> for UploadSummary {
    fn from(r: &UploadRecord) -> Self {
        Self {
            upload_id: r.upload_id,
            device_id: r.device_id.clone(),
            sha256: r.sha256.clone(),
            bytes: r.bytes,
            status: r.status,
            reject_reason: r.reject_reason.clone(),
        }
    }
}

/// hexroad's tables and blobs at one location.
///
/// One `Lake` per process writes the tables: commits go through a single lock,
/// and Delta's optimistic concurrency keeps readers (DataFusion, Python, Spark)
/// consistent with whatever version they open.
pub struct Lake {
    root: Url,
    pub(crate) blobs: Arc<dyn ObjectStore>,
    pub(crate) tables: [tokio::sync::Mutex<DeltaTable>; TableName::ALL.len()],
    /// Uploads stored or looked up lately, a bounded number (`recent.rs`).
    recent: Mutex<recent::Recent>,
    pub(crate) commit_lock: tokio::sync::Mutex<()>,
    /// The secret behind public contributor pseudonyms (`public.rs`).
    pub(crate) pseudonym_key: tokio::sync::OnceCell<[u8; 32]>,
    /// Uploads waiting for their group commit (`group.rs`).
    queue: Mutex<Vec<group::Queued>>,
    /// The version each table was last checkpointed at (`maintain.rs`).
    checkpointed: [std::sync::atomic::AtomicU64; TableName::ALL.len()],
    /// When this process last vacuumed each table (`maintain.rs`).
    vacuumed: maintain::VacuumClock,
    /// The checkpoint each shared handle reads its log from (`latest.rs`).
    segments: latest::Segments,
    /// The runtime every query session shares: one cache of Parquet footers
    /// and page indexes, so a query does not parse them again (`session.rs`).
    pub(crate) runtime: Arc<deltalake::datafusion::execution::runtime_env::RuntimeEnv>,
    /// Other processes commit uploads here too (`expect_other_writers`).
    pub(crate) other_writers: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake")
            .field("root", &self.root.as_str())
            .finish()
    }
}

/// Turns `./data`, `/abs/path` or `s3://bucket/prefix` into the root URL,
/// creating a local folder if needed.
pub fn root_url(location: &str) -> Result<Url> {
    let invalid = |reason: String| Error::InvalidLocation {
        location: location.to_owned(),
        reason,
    };
    // delta-rs knows only the schemes whose support it was built with; an
    // object store URL is taken as written (see `storage.rs`).
    let url = match Url::parse(location) {
        Ok(url) if crate::storage::is_s3(&url) => url,
        _ => deltalake::ensure_table_uri(location).map_err(|e| invalid(e.to_string()))?,
    };
    // `join` treats the last segment as a file unless the URL ends in '/'.
    if url.path().ends_with('/') {
        Ok(url)
    } else {
        let mut url = url;
        let path = format!("{}/", url.path());
        url.set_path(&path);
        Ok(url)
    }
}

impl Lake {
    /// Opens (creating where missing) every table at `location`, an
    /// `s3://` location reached as the environment says.
    pub async fn open(location: &str) -> Result<Self> {
        Self::open_with(location, &crate::StorageSettings::default()).await
    }

    /// Opens (creating where missing) every table at `location`; an
    /// `s3://` location is reached as `storage` says and first probed for
    /// create-if-absent PUTs (`storage.rs`).
    pub async fn open_with(location: &str, storage: &crate::StorageSettings) -> Result<Self> {
        let root = root_url(location)?;
        // A local folder syncs what it writes (see `durable`); other stores
        // are durable when they acknowledge.
        let store_root: Arc<dyn ObjectStore> = match root.scheme() {
            "file" => Arc::new(durable::SyncedLocalStore::new()),
            _ if crate::storage::is_s3(&root) => crate::storage::s3_store(&root, storage)?,
            other => {
                return Err(Error::InvalidLocation {
                    location: location.to_owned(),
                    reason: format!(
                        "{other}:// is not a store hexroad writes to: use a folder or s3://bucket/prefix"
                    ),
                });
            }
        };
        // The store above is rooted at the file system (or bucket) root: blobs
        // live under the lake's own path.
        let prefix = object_store::path::Path::from_url_path(root.path()).map_err(|e| {
            Error::InvalidLocation {
                location: location.to_owned(),
                reason: e.to_string(),
            }
        })?;
        if root.scheme() != "file" {
            crate::storage::probe_create_if_absent(store_root.as_ref(), &prefix, location).await?;
            crate::storage::register_delta_log_store(&root);
        }
        let blobs: Arc<dyn ObjectStore> = Arc::new(object_store::prefix::PrefixStore::new(
            Arc::clone(&store_root),
            prefix,
        ));
        let mut tables = Vec::with_capacity(TableName::ALL.len());
        for name in TableName::ALL {
            tables.push(tokio::sync::Mutex::new(
                open_or_create(&root, &store_root, name).await?,
            ));
        }
        let tables: [tokio::sync::Mutex<DeltaTable>; TableName::ALL.len()] = tables
            .try_into()
            .map_err(|_| Error::Internal("one handle per table expected".into()))?;
        let lake = Self {
            root,
            blobs,
            tables,
            recent: Mutex::new(recent::Recent::new(RECENT_UPLOADS)),
            commit_lock: tokio::sync::Mutex::new(()),
            pseudonym_key: tokio::sync::OnceCell::new(),
            queue: Mutex::new(Vec::new()),
            checkpointed: std::array::from_fn(|_| std::sync::atomic::AtomicU64::new(0)),
            vacuumed: Default::default(),
            segments: Default::default(),
            runtime: crate::session::shared_runtime()?,
            other_writers: std::sync::atomic::AtomicBool::new(false),
        };
        lake.find_unfinished_rows().await?;
        debug!(root = %lake.root, "lake open");
        Ok(lake)
    }

    /// The root URL of the lake (`file:///…/data/`, `s3://…/`).
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// Where the object at `key` (relative to [`Lake::blobs`]) lies on this
    /// machine's file system, when the lake is a local folder: readers that
    /// need a file (media probes) read it there instead of a copy.
    pub fn local_path(&self, key: &object_store::path::Path) -> Option<std::path::PathBuf> {
        if self.root.scheme() != "file" {
            return None;
        }
        let prefix = object_store::path::Path::from_url_path(self.root.path()).ok()?;
        let full: object_store::path::Path = prefix.parts().chain(key.parts()).collect();
        object_store::local::LocalFileSystem::new()
            .path_to_filesystem(&full)
            .ok()
    }

    /// The object store rooted at the lake's location; blobs live under `raw/`.
    pub fn blobs(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.blobs)
    }

    /// The Delta table location of `table`.
    pub fn table_url(&self, table: TableName) -> Url {
        table_url(&self.root, table)
    }

    /// Notes which not-yet-listed uploads already have GNSS or telemetry
    /// rows: only where a group commit was cut short (its note is still
    /// there), never a scan of history.
    async fn find_unfinished_rows(&self) -> Result<()> {
        let (gnss, telemetry) = self.unfinished_rows().await?;
        let mut recent = self.lock_recent();
        recent.gnss.extend(gnss);
        recent.telemetry.extend(telemetry);
        Ok(())
    }

    /// Says other processes commit uploads to this location too (several
    /// ingest nodes): each group commit then also reads the in-flight
    /// notes they left, so a retry of an upload whose rows a dead node
    /// wrote before listing it does not write them twice. One listing of
    /// `_hexroad/inflight/` per group; on one machine, nothing.
    pub fn expect_other_writers(&self) {
        self.other_writers
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Remembers at most `uploads` recently stored uploads in memory
    /// (default [`RECENT_UPLOADS`]); older ones are looked up in `uploads`.
    pub fn with_recent_uploads(self, uploads: usize) -> Self {
        *self.lock_recent() = recent::Recent::new(uploads);
        self
    }

    /// How many uploads are remembered in memory now, and at most.
    pub fn recent_uploads(&self) -> (usize, usize) {
        let recent = self.lock_recent();
        (recent.len(), recent.capacity())
    }

    /// Forgets forgotten uploads from memory, so the same bytes sent again
    /// are stored again.
    pub(crate) fn forget_uploads(&self, ids: &[String]) {
        let mut recent = self.lock_recent();
        for id in ids.iter().filter_map(|s| s.parse::<UploadId>().ok()) {
            recent.forget(id);
        }
    }

    pub(crate) fn lock_recent(&self) -> std::sync::MutexGuard<'_, recent::Recent> {
        // A panic while holding the lock cannot leave it half-updated
        // (each update is one insert or removal), so a poisoned lock is
        // still usable.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What is stored of `upload`, if anything: from memory when it was
    /// stored or asked for lately, else one lookup in `uploads`.
    pub async fn upload_summary(&self, upload: UploadId) -> Result<Option<UploadSummary>> {
        if let Some(summary) = self.lock_recent().get(&upload) {
            return Ok(Some(summary.clone()));
        }
        let found = self.stored_by_id(&[upload]).await?.into_iter().next();
        if let Some(summary) = &found {
            self.lock_recent().insert(summary.clone());
        }
        Ok(found)
    }

    /// Appends rows to one table in one Delta commit.
    pub(crate) async fn append(&self, table: TableName, batch: RecordBatch) -> Result<()> {
        let mut guard = self.tables[table.index()].lock().await;
        let current = guard.clone();
        let updated = current
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .with_commit_properties(group::quiet(Vec::new()))
            .await
            .map_err(|source| Error::Delta {
                table: table.as_str(),
                source,
            })?;
        *guard = updated;
        Ok(())
    }

    /// Appends rows to `table` (frames and processing rows, from outside `lake`).
    pub async fn append_rows(&self, table: TableName, batch: RecordBatch) -> Result<()> {
        if matches!(
            table,
            TableName::Uploads | TableName::Gnss | TableName::Telemetry
        ) {
            return Err(Error::Internal(format!(
                "{} is written through commit_upload only",
                table.as_str()
            )));
        }
        if matches!(
            table,
            TableName::PrivacyZones | TableName::Contributors | TableName::Enrolments
        ) {
            return Err(Error::Internal(format!(
                "{} is written through its own record_… method",
                table.as_str()
            )));
        }
        if matches!(table, TableName::Rewards | TableName::FraudFlags) {
            return Err(Error::Internal(format!(
                "{} is written through commit_epoch_rows only",
                table.as_str()
            )));
        }
        self.append(table, batch).await
    }

    /// Appends a registration or status change to `devices`.
    pub async fn record_device(&self, record: &DeviceRecord) -> Result<()> {
        let batch = schema::devices_batch(std::slice::from_ref(record))?;
        self.append(TableName::Devices, batch).await
    }

    /// Every device's current state (its latest row in `devices`).
    pub async fn devices(&self) -> Result<Vec<DeviceRecord>> {
        let ctx = self.session().await?;
        let batches = ctx
            .sql(
                "SELECT device_id, contributor_id, make, model, status, \
                 registered_at, changed_at FROM devices ORDER BY changed_at",
            )
            .await?
            .collect()
            .await?;
        let mut latest: HashMap<DeviceId, DeviceRecord> = HashMap::new();
        for batch in &batches {
            for record in device_records(batch)? {
                latest.insert(record.device_id.clone(), record);
            }
        }
        let mut out: Vec<_> = latest.into_values().collect();
        out.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        Ok(out)
    }

    /// The device rows committed after `devices` version `since`, in commit
    /// order, and the version they bring the reader to: how an ingest node
    /// learns of registrations and revocations made on another.
    pub async fn devices_since(&self, since: u64) -> Result<(u64, Vec<DeviceRecord>)> {
        let appended = self.appended_since(TableName::Devices, since).await?;
        let mut out = Vec::new();
        for batch in &appended.batches {
            out.extend(device_records(batch)?);
        }
        Ok((appended.version, out))
    }

    /// Stores one upload's rows: GNSS and telemetry first, the `uploads` row
    /// last, each in its own Delta commit at most once per table.
    ///
    /// Idempotent: rows already present for this upload id are not written
    /// again, so a crash between commits is repaired by calling this again,
    /// and a retried upload adds nothing. An accepted upload whose bytes were
    /// already accepted from the *same* device is the same upload sent twice
    /// and adds nothing; from *another* device it is stored as a `Duplicate`
    /// (for fraud review) without its rows.
    pub async fn commit_upload(
        &self,
        record: UploadRecord,
        gnss: &[GnssPoint],
        telemetry: &[TelemetrySample],
    ) -> Result<CommitOutcome> {
        // Uploads finishing together share their commits (`group.rs`).
        self.commit_in_group(record, gnss, telemetry).await
    }
}

fn table_url(root: &Url, table: TableName) -> Url {
    // Joining a fixed relative path onto a directory URL cannot fail.
    root.join(&format!("tables/{}/", table.as_str()))
        .unwrap_or_else(|_| root.clone())
}

/// A power cut while a commit file was written can leave it empty or cut
/// mid-line on a local folder; the table then cannot be opened at all. The
/// last commit, if any of its lines is not whole JSON, never completed: it
/// is renamed `<n>.json.truncated` (kept for a post-mortem) so the table
/// opens at the version before it. Only the last one: an earlier broken
/// commit is real damage and is left for the error it causes.
fn set_aside_truncated_commit(log: &std::path::Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(log) else {
        return Ok(());
    };
    let last = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let version = p
                .file_name()?
                .to_str()?
                .strip_suffix(".json")?
                .parse::<u64>()
                .ok()?;
            Some((version, p))
        })
        .max_by_key(|(v, _)| *v);
    let Some((version, path)) = last else {
        return Ok(());
    };
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    let text = std::fs::read(&path).map_err(io)?;
    let whole = !text.is_empty()
        && text
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .all(|line| serde_json::from_slice::<serde_json::Value>(line).is_ok());
    if whole {
        return Ok(());
    }
    let aside = path.with_extension("json.truncated");
    std::fs::rename(&path, &aside).map_err(io)?;
    tracing::warn!(commit = version, path = %aside.display(), "set aside a truncated last commit");
    Ok(())
}

async fn open_or_create(
    root: &Url,
    store_root: &Arc<dyn ObjectStore>,
    name: TableName,
) -> Result<DeltaTable> {
    let url = table_url(root, name);
    if url.scheme() == "file"
        && let Ok(path) = url.to_file_path()
    {
        std::fs::create_dir_all(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        set_aside_truncated_commit(&path.join("_delta_log"))?;
    }
    let delta_err = |source| Error::Delta {
        table: name.as_str(),
        source,
    };
    let mut table = DeltaTableBuilder::from_url(url.clone())
        .map_err(delta_err)?
        .with_storage_backend(Arc::clone(store_root), url)
        .build()
        .map_err(delta_err)?;
    match latest::load_racing_cleanup(&mut table).await {
        // A folder with no log yet: created below.
        Ok(()) | Err(deltalake::DeltaTableError::NotATable(_)) => {}
        Err(e) => return Err(delta_err(e)),
    }
    if table.version().is_some() {
        return maintain::with_properties(table, name).await;
    }
    let columns = StructType::try_from_arrow(schema::stored_schema(name).as_ref())
        .map_err(|e| Error::Internal(format!("schema of {}: {e}", name.as_str())))?;
    info!(table = name.as_str(), "creating table");
    table
        .create()
        .with_table_name(name.as_str())
        .with_columns(columns.fields().cloned())
        .with_configuration(maintain::Maintenance::default().table_properties(name))
        .with_save_mode(SaveMode::Ignore)
        .await
        .map_err(delta_err)
}

fn parse_upload_id(s: &str) -> Result<UploadId> {
    s.parse()
        .map_err(|e| Error::Internal(format!("stored upload id {s:?} is not a UUID: {e}")))
}

/// `uploads` rows as [`UploadSummary`]s.
pub(crate) fn summaries(batch: &RecordBatch) -> Result<Vec<UploadSummary>> {
    let ids = columns::strings(batch, "upload_id")?;
    let devices = columns::strings(batch, "device_id")?;
    let shas = columns::strings(batch, "sha256")?;
    let statuses = columns::strings(batch, "status")?;
    let reasons = columns::opt_strings(batch, "reject_reason")?;
    let bytes = columns::i64s(batch, "bytes")?;
    (0..batch.num_rows())
        .map(|i| {
            Ok(UploadSummary {
                bytes: u64::try_from(bytes[i]).unwrap_or_default(),
                upload_id: parse_upload_id(&ids[i])?,
                device_id: devices[i]
                    .parse()
                    .map_err(|e: IdError| Error::Internal(e.to_string()))?,
                sha256: shas[i].clone(),
                status: UploadStatus::parse(&statuses[i]).ok_or_else(|| {
                    Error::Internal(format!("unknown upload status {:?}", statuses[i]))
                })?,
                reject_reason: reasons[i].clone(),
            })
        })
        .collect()
}

/// `devices` rows.
fn device_records(batch: &RecordBatch) -> Result<Vec<DeviceRecord>> {
    let devices = columns::strings(batch, "device_id")?;
    let contributors = columns::strings(batch, "contributor_id")?;
    let makes = columns::strings(batch, "make")?;
    let models = columns::strings(batch, "model")?;
    let statuses = columns::strings(batch, "status")?;
    let registered = columns::times(batch, "registered_at")?;
    let changed = columns::times(batch, "changed_at")?;
    let bad = |e: IdError| Error::Internal(e.to_string());
    (0..batch.num_rows())
        .map(|i| {
            Ok(DeviceRecord {
                device_id: devices[i].parse().map_err(bad)?,
                contributor_id: contributors[i].parse().map_err(bad)?,
                make: makes[i].clone(),
                model: models[i].clone(),
                status: DeviceStatus::parse(&statuses[i]).ok_or_else(|| {
                    Error::Internal(format!("unknown device status {:?}", statuses[i]))
                })?,
                registered_at: registered[i],
                changed_at: changed[i],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ContributorId, UploadKind};

    /// Killed after the GNSS commit and before the `uploads` commit: the
    /// device retries, and the retry must not append the GNSS rows again.
    #[tokio::test]
    async fn a_crash_between_commits_is_repaired_without_duplicates() {
        crash_between_commits_then_retry(false).await;
    }

    /// The same crash on one ingest node while another, open all along,
    /// takes the device's retry: it reads the dead node's note then.
    #[tokio::test]
    async fn a_crash_on_another_node_is_repaired_without_duplicates() {
        crash_between_commits_then_retry(true).await;
    }

    async fn crash_between_commits_then_retry(survivor_open_before: bool) {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().to_string_lossy().into_owned();
        let device = DeviceId::from_public_key(&[9; 32]);
        let id = UploadId::new_random();
        let t0 = chrono::Utc::now() - chrono::Duration::hours(1);
        let points: Vec<GnssPoint> = (0..6)
            .map(|i| GnssPoint {
                ts: t0 + chrono::Duration::seconds(i),
                lat: 60.17,
                lon: 24.94 + i as f64 * 1e-5,
                alt: None,
                speed: None,
                heading: None,
                hdop: None,
            })
            .collect();
        let survivor = if survivor_open_before {
            let lake = Lake::open(&location).await.unwrap();
            lake.expect_other_writers();
            Some(lake)
        } else {
            None
        };
        {
            // What a group commit does before its `uploads` commit.
            let lake = Lake::open(&location).await.unwrap();
            lake.note_inflight(&[id]).await.unwrap();
            let batch = schema::gnss_batch(id, &device, &points).unwrap();
            lake.append(TableName::Gnss, batch).await.unwrap();
            // ...and the process dies here.
        }
        let lake = match survivor {
            Some(lake) => lake,
            None => Lake::open(&location).await.unwrap(),
        };
        assert!(
            lake.upload_summary(id).await.unwrap().is_none(),
            "not acknowledged yet"
        );
        let record = UploadRecord {
            upload_id: id,
            device_id: device,
            contributor_id: "bob".parse::<ContributorId>().unwrap(),
            kind: UploadKind::Gnss,
            format: "gpx".into(),
            drive_id: None,
            bytes: 1,
            sha256: "dd".into(),
            object_key: String::new(),
            received_at: chrono::Utc::now(),
            status: UploadStatus::Accepted,
            reject_reason: None,
            duplicate_of: None,
            media: None,
        };
        lake.commit_upload(record, &points, &[]).await.unwrap();
        let out = lake.query("SELECT count(*) AS n FROM gnss").await.unwrap();
        let n = columns::i64s(&out.batches[0], "n").unwrap()[0];
        assert_eq!(n, 6);
        assert_eq!(
            lake.upload_summary(id).await.unwrap().unwrap().status,
            UploadStatus::Accepted
        );
    }
}
