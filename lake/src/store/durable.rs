//! A local folder that keeps what it acknowledges: object_store's local
//! file system writes a file and renames it into place but never calls
//! `fsync`, so after a power cut an acknowledged upload or a visible Delta
//! commit can be missing or empty. This wrapper syncs every file it writes,
//! and the folder that names it, before the write returns. Reads, listings
//! and deletes pass through.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result, UploadPart,
};

/// The local file system rooted at `/`, syncing what it writes.
#[derive(Debug, Clone)]
pub struct SyncedLocalStore {
    inner: Arc<LocalFileSystem>,
}

impl SyncedLocalStore {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(LocalFileSystem::new()),
        }
    }
}

impl Default for SyncedLocalStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SyncedLocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncedLocalStore({})", self.inner)
    }
}

/// Syncs the file at `location` and the folder holding it, so both its
/// bytes and its name survive a power cut.
async fn sync(store: &LocalFileSystem, location: &Path) -> Result<()> {
    let file = store.path_to_filesystem(location)?;
    tokio::task::spawn_blocking(move || sync_file_and_folder(&file))
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "SyncedLocalStore",
            source: Box::new(e),
        })?
        .map_err(|source| object_store::Error::Generic {
            store: "SyncedLocalStore",
            source: Box::new(source),
        })
}

fn sync_file_and_folder(file: &PathBuf) -> std::io::Result<()> {
    std::fs::File::open(file)?.sync_all()?;
    if let Some(folder) = file.parent() {
        std::fs::File::open(folder)?.sync_all()?;
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for SyncedLocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let put = self.inner.put_opts(location, payload, opts).await?;
        sync(&self.inner, location).await?;
        Ok(put)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(SyncedUpload {
            upload,
            store: Arc::clone(&self.inner),
            location: location.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    /// object_store's local listing stats every file under the prefix and
    /// only then drops those at or before `offset`; Delta lists its log
    /// this way at every snapshot update, so each commit cost one `stat`
    /// per commit ever kept. Names are compared first here, and only the
    /// files past `offset` are looked at.
    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let (inner, offset) = (Arc::clone(&self.inner), offset.clone());
        let root = match prefix {
            Some(p) => inner.path_to_filesystem(p),
            None => Ok(PathBuf::from("/")),
        };
        futures::stream::once(async move {
            let root = root?;
            let after = offset.clone();
            let names = tokio::task::spawn_blocking(move || names_after(&root, &after))
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "SyncedLocalStore",
                    source: Box::new(e),
                })?;
            let mut found = Vec::with_capacity(names.len());
            for location in names {
                match inner.head(&location).await {
                    Ok(meta) => found.push(Ok(meta)),
                    // Removed since the directory was read.
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => found.push(Err(e)),
                }
            }
            Ok::<_, object_store::Error>(futures::stream::iter(found))
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        sync(&self.inner, to).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await?;
        sync(&self.inner, to).await
    }
}

/// The files under `root` (recursively) whose location sorts after
/// `offset`, by name only, in order; staging files (`name#123`) left out
/// as the local store leaves them out.
fn names_after(root: &std::path::Path, offset: &Path) -> Vec<Path> {
    let mut out = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                folders.push(path);
                continue;
            }
            let Ok(location) = Path::from_absolute_path(&path) else {
                continue;
            };
            let staging = location
                .filename()
                .and_then(|n| n.split_once('#'))
                .is_some_and(|(_, digits)| {
                    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                });
            if !staging && location > *offset {
                out.push(location);
            }
        }
    }
    out.sort();
    out
}

/// A multipart write whose completion syncs the finished file.
#[derive(Debug)]
struct SyncedUpload {
    upload: Box<dyn MultipartUpload>,
    store: Arc<LocalFileSystem>,
    location: Path,
}

#[async_trait]
impl MultipartUpload for SyncedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.upload.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let done = self.upload.complete().await?;
        sync(&self.store, &self.location).await?;
        Ok(done)
    }

    async fn abort(&mut self) -> Result<()> {
        self.upload.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    /// Every way of writing lands the bytes where a plain local store
    /// would; the sync is on the way, not instead.
    #[tokio::test]
    async fn writes_land_as_on_the_plain_local_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = SyncedLocalStore::new();
        let at = |name: &str| Path::from_absolute_path(dir.path().join(name)).unwrap();
        store
            .put(&at("a"), PutPayload::from_static(b"one"))
            .await
            .unwrap();
        let created = store
            .put_opts(
                &at("a"),
                PutPayload::from_static(b"two"),
                PutOptions::from(object_store::PutMode::Create),
            )
            .await;
        assert!(
            matches!(created, Err(object_store::Error::AlreadyExists { .. })),
            "create-if-absent is kept"
        );
        let mut upload = store.put_multipart(&at("b")).await.unwrap();
        upload
            .put_part(PutPayload::from_static(b"par"))
            .await
            .unwrap();
        upload
            .put_part(PutPayload::from_static(b"ts"))
            .await
            .unwrap();
        upload.complete().await.unwrap();
        store.copy(&at("b"), &at("c")).await.unwrap();
        store.rename(&at("c"), &at("d")).await.unwrap();
        for (name, bytes) in [("a", "one"), ("b", "parts"), ("d", "parts")] {
            let got = store.get(&at(name)).await.unwrap().bytes().await.unwrap();
            assert_eq!(got.as_ref(), bytes.as_bytes(), "{name}");
        }
        assert!(store.get(&at("c")).await.is_err());
    }

    /// Listing after an offset gives what the plain local store gives:
    /// the same files, nested ones too, staging files left out.
    #[tokio::test]
    async fn listing_after_an_offset_matches_the_plain_local_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = SyncedLocalStore::new();
        let at = |name: &str| Path::from_absolute_path(dir.path().join(name)).unwrap();
        for name in [
            "log/00000000000000000000.json",
            "log/00000000000000000001.json",
            "log/00000000000000000002.checkpoint.parquet",
            "log/00000000000000000002.json",
            "log/00000000000000000003.json",
            "log/_commits/00000000000000000004.json",
            "log/_last_checkpoint",
        ] {
            store
                .put(&at(name), PutPayload::from_static(b"x"))
                .await
                .unwrap();
        }
        std::fs::write(dir.path().join("log/00000000000000000005.json#1"), b"x").unwrap();
        let prefix = at("log");
        for offset in [
            "log/00000000000000000001.json",
            "log/00000000000000000000.json",
            "log/00000000000000000009.json",
        ] {
            let offset = at(offset);
            let listed = |s: BoxStream<'static, Result<ObjectMeta>>| async move {
                let mut v: Vec<(String, u64)> = s
                    .map_ok(|m| (m.location.to_string(), m.size))
                    .try_collect()
                    .await
                    .unwrap();
                v.sort();
                v
            };
            let ours = listed(store.list_with_offset(Some(&prefix), &offset)).await;
            let plain = listed(store.inner.list_with_offset(Some(&prefix), &offset)).await;
            assert_eq!(ours, plain, "after {offset}");
            if offset.as_ref().ends_with("0000.json") {
                assert_eq!(ours.len(), 6, "{ours:?}");
            }
        }
    }
}
