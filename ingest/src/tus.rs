//! tus 1.0 upload staging on the object store.
//!
//! Each `PATCH` body is streamed into its own object,
//! `staging/<upload>/chunk-<offset>`, written atomically (multipart, then
//! completed), so the upload's offset after any crash is simply the sum of the
//! contiguous chunks present. `info.json` beside them records what the device
//! declared when it created the upload.
//!
//! Bytes are moved once: each chunk is hashed for the whole upload's sha256
//! on the way in, an upload sent in one `PATCH` is validated and promoted as
//! the chunk object itself (see [`Staging::whole`]), and only an upload sent
//! in several is concatenated, once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, TryStreamExt};
use hexroad_lake::object_store::path::Path;
use hexroad_lake::object_store::{self, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use hexroad_wire::{ContributorId, DeviceId, UploadId, UploadKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::tus_headers::ChunkChecksum;

/// What the device declared when it created the upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadInfo {
    pub upload_id: UploadId,
    pub device_id: DeviceId,
    pub contributor_id: ContributorId,
    pub kind: UploadKind,
    pub format: String,
    pub length: u64,
    /// Lowercase hex sha256 of the whole upload, as declared.
    pub sha256: String,
    pub drive_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// One upload's state while it is being transferred.
#[derive(Debug)]
pub struct Slot {
    pub info: UploadInfo,
    pub offset: u64,
    /// The sha256 of bytes `[0, offset)`, when this process received every
    /// one of them; an upload resumed after a restart (or on another node)
    /// is hashed again when it is finished.
    hashed: Option<Sha256>,
}

/// A complete upload as one object in the store.
#[derive(Debug, Clone)]
pub struct Whole {
    pub location: Path,
    /// Lowercase hex sha256 of the bytes received.
    pub sha256: String,
}

/// How a `PATCH` body ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkEnd {
    /// The whole body arrived and matched its checksum.
    Complete { received: u64 },
    /// The connection was cut. What arrived cannot be checked against
    /// `Upload-Checksum`, so none of it is kept: the device re-sends the
    /// chunk from the offset HEAD reports.
    Cut { received: u64 },
    /// The body went silent for longer than the idle limit; as with a cut,
    /// nothing is kept and the upload is free for the device to resume.
    Stalled { received: u64 },
    /// The body did not match `Upload-Checksum`; nothing was kept.
    ChecksumMismatch,
    /// The body ran past the declared `Upload-Length`; nothing was kept.
    TooLong,
}

/// All uploads being transferred.
pub struct Staging {
    store: Arc<dyn ObjectStore>,
    slots: Mutex<HashMap<UploadId, Arc<tokio::sync::Mutex<Option<Slot>>>>>,
    open: Mutex<Held>,
}

/// The unfinished uploads and the bytes they declared, by device.
#[derive(Default)]
struct Held {
    by_device: HashMap<DeviceId, HashMap<UploadId, u64>>,
    bytes: u64,
}

/// What unfinished uploads may hold, per device and in all.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub max_open: usize,
    pub max_device_bytes: u64,
    pub max_total_bytes: u64,
}

/// Why a new upload was not staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The device holds this many unfinished uploads already.
    TooManyOpen(usize),
    /// The device's unfinished uploads declare this many bytes already.
    DeviceBytes(u64),
    /// Staging as a whole is full.
    TotalBytes,
}

fn dir(id: UploadId) -> Path {
    Path::from(format!("staging/{id}"))
}

fn info_path(id: UploadId) -> Path {
    Path::from(format!("staging/{id}/info.json"))
}

fn whole_path(id: UploadId) -> Path {
    Path::from(format!("staging/{id}/whole"))
}

fn chunk_path(id: UploadId, offset: u64) -> Path {
    Path::from(format!("staging/{id}/chunk-{offset:020}"))
}

impl Staging {
    /// Opens staging, recounting the unfinished uploads left by an earlier run.
    pub async fn open(store: Arc<dyn ObjectStore>) -> object_store::Result<Self> {
        let staging = Self {
            store,
            slots: Mutex::new(HashMap::new()),
            open: Mutex::new(Held::default()),
        };
        for info in staging.infos().await? {
            let mut held = staging.open.lock().unwrap_or_else(|e| e.into_inner());
            held.bytes += info.length;
            held.by_device
                .entry(info.device_id)
                .or_default()
                .insert(info.upload_id, info.length);
        }
        Ok(staging)
    }

    /// Unfinished uploads in all, and the bytes they declared.
    pub fn held(&self) -> (usize, u64) {
        let held = self.open.lock().unwrap_or_else(|e| e.into_inner());
        (held.by_device.values().map(HashMap::len).sum(), held.bytes)
    }

    /// This device's unfinished uploads.
    pub fn open_uploads(&self, device: &DeviceId) -> Vec<UploadId> {
        let held = self.open.lock().unwrap_or_else(|e| e.into_inner());
        held.by_device
            .get(device)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Records a new upload if its device and staging as a whole have room
    /// for it under `quota`, reserving its declared length. Counting and
    /// reserving are one step under one lock, so concurrent creations
    /// cannot pass a limit together.
    pub async fn create(
        &self,
        info: UploadInfo,
        quota: Quota,
    ) -> object_store::Result<Result<(), Refusal>> {
        {
            let mut guard = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let held = &mut *guard;
            let mine = held.by_device.entry(info.device_id.clone()).or_default();
            let mine_bytes: u64 = mine.values().sum();
            if mine.len() >= quota.max_open {
                return Ok(Err(Refusal::TooManyOpen(mine.len())));
            }
            if mine_bytes.saturating_add(info.length) > quota.max_device_bytes {
                return Ok(Err(Refusal::DeviceBytes(mine_bytes)));
            }
            if held.bytes.saturating_add(info.length) > quota.max_total_bytes {
                return Ok(Err(Refusal::TotalBytes));
            }
            mine.insert(info.upload_id, info.length);
            held.bytes += info.length;
        }
        let json = serde_json::to_vec(&info).map_err(|e| object_store::Error::Generic {
            store: "staging",
            source: Box::new(e),
        });
        let stored = match json {
            Ok(json) => {
                self.store
                    .put(&info_path(info.upload_id), PutPayload::from(json))
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = stored {
            self.unmark(&info.device_id, info.upload_id);
            return Err(e);
        }
        Ok(Ok(()))
    }

    fn unmark(&self, device: &DeviceId, id: UploadId) {
        let mut guard = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let held = &mut *guard;
        if let Some(mine) = held.by_device.get_mut(device) {
            if let Some(length) = mine.remove(&id) {
                held.bytes = held.bytes.saturating_sub(length);
            }
            if mine.is_empty() {
                held.by_device.remove(device);
            }
        }
    }

    /// Locks one upload for a request, loading its state if this process has
    /// not seen it yet. `None` inside means no such upload is being staged.
    pub async fn lock(
        &self,
        id: UploadId,
    ) -> object_store::Result<tokio::sync::OwnedMutexGuard<Option<Slot>>> {
        let cell = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(
                slots
                    .entry(id)
                    .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(None))),
            )
        };
        let mut guard = Arc::clone(&cell).lock_owned().await;
        if guard.is_none() {
            *guard = self.load(id).await?;
        }
        if guard.is_none() {
            // No such upload: hold no lock for it, or every id a stranger
            // asks about would stay in memory.
            self.forget(id, &cell);
        }
        Ok(guard)
    }

    /// Drops the lock cell of an upload that is gone. A request still
    /// waiting on the old cell finds nothing staged, as a new one would.
    fn forget(&self, id: UploadId, cell: &Arc<tokio::sync::Mutex<Option<Slot>>>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.get(&id).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            slots.remove(&id);
        }
    }

    /// Brings `slot` up to date with the store, where another node may have
    /// received chunks of the upload, or finished it, since this process
    /// loaded it. Call it holding the upload's lease.
    pub async fn reload(&self, id: UploadId, slot: &mut Option<Slot>) -> object_store::Result<()> {
        let Some(current) = slot.as_mut() else {
            return Ok(());
        };
        match self.store.head(&info_path(id)).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => {
                *slot = None;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
        let offset = contiguous_end(&self.chunks(id).await?);
        if offset != current.offset {
            current.offset = offset;
            // What this process hashed no longer covers the bytes.
            current.hashed = (offset == 0).then(Sha256::new);
        }
        Ok(())
    }

    /// Lock cells held, for the metrics.
    pub fn cells(&self) -> usize {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    async fn load(&self, id: UploadId) -> object_store::Result<Option<Slot>> {
        let info: UploadInfo = match self.store.get(&info_path(id)).await {
            Ok(got) => match serde_json::from_slice(&got.bytes().await?) {
                Ok(info) => info,
                Err(_) => return Ok(None),
            },
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let offset = contiguous_end(&self.chunks(id).await?);
        Ok(Some(Slot {
            info,
            offset,
            hashed: (offset == 0).then(Sha256::new),
        }))
    }

    /// The chunks of an upload as (start offset, size), in order.
    async fn chunks(&self, id: UploadId) -> object_store::Result<Vec<(u64, u64, Path)>> {
        let mut chunks: Vec<(u64, u64, Path)> = self
            .store
            .list(Some(&dir(id)))
            .try_filter_map(|m| async move {
                let start = m
                    .location
                    .filename()
                    .and_then(|f| f.strip_prefix("chunk-"))
                    .and_then(|n| n.parse::<u64>().ok());
                Ok(start.map(|s| (s, m.size, m.location)))
            })
            .try_collect()
            .await?;
        chunks.sort_by_key(|c| c.0);
        Ok(chunks)
    }

    /// Streams a `PATCH` body into a new chunk at `slot.offset`, keeping
    /// it only if the whole body arrived and matched `checksum`. A body
    /// silent for `idle` ends as [`ChunkEnd::Stalled`].
    pub async fn write_chunk<S, E>(
        &self,
        slot: &mut Slot,
        body: S,
        checksum: ChunkChecksum,
        idle: std::time::Duration,
    ) -> object_store::Result<ChunkEnd>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
    {
        let id = slot.info.upload_id;
        let room = slot.info.length - slot.offset;
        let path = chunk_path(id, slot.offset);
        let mut writer = WriteMultipart::new(self.store.put_multipart(&path).await?);
        let mut hasher = checksum.hasher();
        // A sha256-checked chunk at offset 0 hashes the upload as it is.
        let shared = slot.offset == 0 && hasher.sha256().is_some();
        let mut whole = slot.hashed.clone().filter(|_| !shared);
        let mut received = 0u64;
        let mut body = body;
        loop {
            let frame = match tokio::time::timeout(idle, body.next()).await {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => {
                    writer.abort().await?;
                    return Ok(ChunkEnd::Stalled { received });
                }
            };
            match frame {
                Ok(data) => {
                    received += data.len() as u64;
                    if received > room {
                        writer.abort().await?;
                        return Ok(ChunkEnd::TooLong);
                    }
                    hasher.update(&data);
                    if let Some(whole) = whole.as_mut() {
                        whole.update(&data);
                    }
                    writer.wait_for_capacity(4).await?;
                    writer.write(&data);
                }
                Err(_) => {
                    writer.abort().await?;
                    return Ok(ChunkEnd::Cut { received });
                }
            }
        }
        if received == 0 {
            writer.abort().await?;
            return Ok(ChunkEnd::Complete { received });
        }
        if shared {
            whole = hasher.sha256().cloned();
        }
        if !hasher.matches() {
            writer.abort().await?;
            return Ok(ChunkEnd::ChecksumMismatch);
        }
        writer.finish().await?;
        slot.offset += received;
        slot.hashed = whole;
        Ok(ChunkEnd::Complete { received })
    }

    /// Every staged upload's declaration, as stored (for the sweeper).
    pub async fn infos(&self) -> object_store::Result<Vec<UploadInfo>> {
        let metas: Vec<_> = self
            .store
            .list(Some(&Path::from("staging")))
            .try_filter(|m| futures::future::ready(m.location.filename() == Some("info.json")))
            .try_collect()
            .await?;
        let mut infos = Vec::with_capacity(metas.len());
        for meta in metas {
            match self.store.get(&meta.location).await {
                Ok(got) => {
                    if let Ok(info) = serde_json::from_slice(&got.bytes().await?) {
                        infos.push(info);
                    }
                }
                // Finished while listing.
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(infos)
    }

    /// The complete upload as one object and its sha256. An upload sent in
    /// one `PATCH` is its single chunk, as stored: nothing is copied, and
    /// its hash is the one taken on the way in. One sent in several is
    /// concatenated once into `staging/<upload>/whole`, hashed as it goes.
    pub async fn whole(&self, slot: &Slot) -> object_store::Result<Whole> {
        let id = slot.info.upload_id;
        let length = slot.info.length;
        let mut parts = Vec::new();
        let mut next = 0u64;
        for (start, size, path) in self.chunks(id).await? {
            if start == next && next < length {
                parts.push(path);
                next = start + size;
            }
        }
        if let [only] = parts.as_slice() {
            let sha256 = match slot.hashed.clone() {
                Some(hashed) if slot.offset == length => hashed,
                _ => {
                    let mut hasher = Sha256::new();
                    let mut stream = self.store.get(only).await?.into_stream();
                    while let Some(data) = stream.try_next().await? {
                        hasher.update(&data);
                    }
                    hasher
                }
            };
            return Ok(Whole {
                location: only.clone(),
                sha256: hex::encode(sha256.finalize()),
            });
        }
        let location = whole_path(id);
        let mut hasher = Sha256::new();
        if parts.is_empty() {
            self.store.put(&location, PutPayload::new()).await?;
        } else {
            let mut writer = WriteMultipart::new(self.store.put_multipart(&location).await?);
            for path in &parts {
                let mut stream = self.store.get(path).await?.into_stream();
                while let Some(data) = stream.try_next().await? {
                    hasher.update(&data);
                    writer.wait_for_capacity(4).await?;
                    writer.write(&data);
                }
            }
            writer.finish().await?;
        }
        Ok(Whole {
            location,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// Downloads an object into a local file (for a store that is not a
    /// local folder: validators read files).
    pub async fn download(
        &self,
        location: &Path,
        into: &std::path::Path,
    ) -> object_store::Result<()> {
        let io = |e: std::io::Error| object_store::Error::Generic {
            store: "staging",
            source: Box::new(e),
        };
        let mut file = tokio::fs::File::create(into).await.map_err(io)?;
        let mut stream = self.store.get(location).await?.into_stream();
        while let Some(data) = stream.try_next().await? {
            file.write_all(&data).await.map_err(io)?;
        }
        file.flush().await.map_err(io)
    }

    /// Makes the complete upload the object at `key` without moving its
    /// bytes: a hard link on a local folder, a server-side copy on S3. The
    /// staged chunks stay until [`Staging::remove`], so a crash before the
    /// upload commits leaves it finishable.
    pub async fn promote(&self, whole: &Whole, key: &Path) -> object_store::Result<()> {
        self.store.copy(&whole.location, key).await
    }

    /// Removes an upload's staged bytes once it is finished or terminated.
    pub async fn remove(&self, info: &UploadInfo) -> object_store::Result<()> {
        let id = info.upload_id;
        let paths: Vec<Path> = self
            .store
            .list(Some(&dir(id)))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        // Chunks first, info last: a crash midway leaves a shorter upload
        // that a retry can still find and finish, never chunks without info.
        for path in paths.iter().filter(|p| p.filename() != Some("info.json")) {
            self.store.delete(path).await?;
        }
        match self.store.delete(&info_path(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        self.unmark(&info.device_id, id);
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        Ok(())
    }
}

/// The end of the contiguous run of chunks that starts at 0.
fn contiguous_end(chunks: &[(u64, u64, Path)]) -> u64 {
    let mut end = 0;
    for (start, size, _) in chunks {
        if *start == end {
            end += size;
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use hexroad_lake::object_store::local::LocalFileSystem;
    use proptest::prelude::*;

    #[test]
    fn offset_stops_at_the_first_gap() {
        let p = Path::from("x");
        let chunks = vec![(0, 10, p.clone()), (10, 5, p.clone()), (20, 5, p)];
        assert_eq!(contiguous_end(&chunks), 15);
    }

    fn info(length: u64, data: &[u8]) -> UploadInfo {
        UploadInfo {
            upload_id: UploadId::new_random(),
            device_id: DeviceId::from_public_key(&[7; 32]),
            contributor_id: ContributorId::try_from("c".to_owned()).unwrap(),
            kind: UploadKind::Telemetry,
            format: "ndjson".into(),
            length,
            sha256: hex::encode(Sha256::digest(data)),
            drive_id: None,
            created_at: Utc::now(),
        }
    }

    const ROOM: Quota = Quota {
        max_open: 8,
        max_device_bytes: u64::MAX,
        max_total_bytes: u64::MAX,
    };

    /// Stages `data` in PATCHes ending at `cuts`; with `restart`, a fresh
    /// `Staging` (as after a restart) takes over before the last one.
    async fn staged(
        store: Arc<dyn ObjectStore>,
        data: &[u8],
        cuts: &[usize],
        restart: bool,
        sha1: bool,
    ) -> (Staging, UploadId) {
        let mut staging = Staging::open(Arc::clone(&store)).await.unwrap();
        let info = info(data.len() as u64, data);
        let id = info.upload_id;
        staging.create(info, ROOM).await.unwrap().unwrap();
        let mut ends: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        ends.push(data.len());
        ends.sort_unstable();
        ends.dedup();
        let mut from = 0;
        for (n, end) in ends.iter().copied().enumerate() {
            if restart && n + 1 == ends.len() {
                staging = Staging::open(Arc::clone(&store)).await.unwrap();
            }
            let mut guard = staging.lock(id).await.unwrap();
            let slot = guard.as_mut().unwrap();
            let body = Bytes::copy_from_slice(&data[from..end]);
            let checksum = if sha1 {
                ChunkChecksum::Sha1(sha1::Sha1::digest(&body).into())
            } else {
                ChunkChecksum::Sha256(Sha256::digest(&body).into())
            };
            let stream = futures::stream::iter([Ok::<_, std::io::Error>(body)]);
            let idle = std::time::Duration::from_secs(5);
            let end_state = staging.write_chunk(slot, stream, checksum, idle).await;
            assert!(matches!(end_state, Ok(ChunkEnd::Complete { .. })));
            from = end;
        }
        (staging, id)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// However an upload was split into PATCHes, whichever checksum
        /// they carried, and whether or not the process restarted in
        /// between, the whole object holds exactly its
        /// bytes and hashes to their sha256.
        #[test]
        fn the_whole_upload_is_its_bytes(
            data in proptest::collection::vec(any::<u8>(), 0..20_000),
            cuts in proptest::collection::vec(any::<usize>(), 0..5),
            restart in any::<bool>(),
            sha1 in any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let store: Arc<dyn ObjectStore> =
                    Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
                let (staging, id) = staged(Arc::clone(&store), &data, &cuts, restart, sha1).await;
                let guard = staging.lock(id).await.unwrap();
                let slot = guard.as_ref().unwrap();
                prop_assert_eq!(slot.offset, data.len() as u64);
                let whole = staging.whole(slot).await.unwrap();
                prop_assert_eq!(&whole.sha256, &slot.info.sha256);
                let raw = Path::from("raw/device/upload");
                staging.promote(&whole, &raw).await.unwrap();
                staging.remove(&slot.info).await.unwrap();
                let kept = store.get(&raw).await.unwrap().bytes().await.unwrap();
                prop_assert_eq!(kept.as_ref(), data.as_slice());
                Ok(())
            })?;
        }
    }

    /// An upload sent in one PATCH is validated and kept as the very file
    /// it was received into: the raw object is a link to the chunk, not a
    /// copy of its bytes.
    #[tokio::test]
    async fn one_patch_is_kept_without_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let data = vec![42u8; 300_000];
        let (staging, id) = staged(Arc::clone(&store), &data, &[], false, false).await;
        let guard = staging.lock(id).await.unwrap();
        let slot = guard.as_ref().unwrap();
        let whole = staging.whole(slot).await.unwrap();
        assert_eq!(whole.location, chunk_path(id, 0));
        staging
            .promote(&whole, &Path::from("raw/d/u"))
            .await
            .unwrap();
        use std::os::unix::fs::MetadataExt;
        let inode = |p: &str| std::fs::metadata(dir.path().join(p)).unwrap().ino();
        assert_eq!(
            inode("raw/d/u"),
            inode(&format!("staging/{id}/chunk-{:020}", 0))
        );
    }
}
