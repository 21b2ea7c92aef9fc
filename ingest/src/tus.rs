//! tus 1.0 upload staging on the object store.
//!
//! Each `PATCH` body is streamed into its own object,
//! `staging/<upload>/chunk-<offset>`, written atomically (multipart, then
//! completed), so the upload's offset after any crash is simply the sum of the
//! contiguous chunks present. `info.json` beside them records what the device
//! declared when it created the upload.

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
        Ok(Some(Slot { info, offset }))
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
        if !hasher.matches() {
            writer.abort().await?;
            return Ok(ChunkEnd::ChecksumMismatch);
        }
        writer.finish().await?;
        slot.offset += received;
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

    /// Concatenates the chunks into a local file, returning it and the hex
    /// sha256 of its content.
    pub async fn assemble(
        &self,
        slot: &Slot,
        into: &std::path::Path,
    ) -> object_store::Result<String> {
        let io = |e: std::io::Error| object_store::Error::Generic {
            store: "staging",
            source: Box::new(e),
        };
        let mut file = tokio::fs::File::create(into).await.map_err(io)?;
        let mut hasher = Sha256::new();
        let mut next = 0u64;
        for (start, size, path) in self.chunks(slot.info.upload_id).await? {
            if start != next || next >= slot.info.length {
                continue;
            }
            let mut stream = self.store.get(&path).await?.into_stream();
            while let Some(data) = stream.try_next().await? {
                hasher.update(&data);
                file.write_all(&data).await.map_err(io)?;
            }
            next = start + size;
        }
        file.flush().await.map_err(io)?;
        Ok(hex::encode(hasher.finalize()))
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

/// Copies a local file into the object store at `key`, streamed in parts.
pub async fn put_file(
    store: &dyn ObjectStore,
    key: &Path,
    file: &std::path::Path,
) -> object_store::Result<()> {
    use tokio::io::AsyncReadExt;
    let io = |e: std::io::Error| object_store::Error::Generic {
        store: "raw",
        source: Box::new(e),
    };
    let mut f = tokio::fs::File::open(file).await.map_err(io)?;
    let mut writer = WriteMultipart::new(store.put_multipart(key).await?);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        writer.wait_for_capacity(4).await?;
        writer.write(&buf[..n]);
    }
    writer.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_stops_at_the_first_gap() {
        let p = Path::from("x");
        let chunks = vec![(0, 10, p.clone()), (10, 5, p.clone()), (20, 5, p)];
        assert_eq!(contiguous_end(&chunks), 15);
    }
}
