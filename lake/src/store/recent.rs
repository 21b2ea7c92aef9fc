//! The uploads this process stored or looked up lately, by id and by
//! content hash, at most [`Recent::capacity`] of them: a device's retry
//! and the next group's duplicate check find them without a read, and
//! everything older is looked up in `uploads` (`reads/uploads.rs`) through
//! the Parquet bloom filters on its `upload_id` and `sha256` columns. The
//! memory it takes is fixed, however long the lake's history grows.

use std::collections::{HashMap, HashSet, VecDeque};

use super::UploadSummary;
use crate::{UploadId, UploadStatus};

/// How many uploads [`Recent`] remembers by default: a few minutes of a
/// large fleet's uploads, about 20 MiB.
pub const RECENT_UPLOADS: usize = 65_536;

/// Recently stored uploads (oldest forgotten first), and the not-yet-listed
/// uploads that already have GNSS or telemetry rows (those of a group
/// commit cut short, found through its in-flight note; a handful).
pub(crate) struct Recent {
    capacity: usize,
    by_id: HashMap<UploadId, UploadSummary>,
    accepted_by_sha: HashMap<String, UploadId>,
    order: VecDeque<UploadId>,
    pub(crate) gnss: HashSet<UploadId>,
    pub(crate) telemetry: HashSet<UploadId>,
}

impl Recent {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            by_id: HashMap::new(),
            accepted_by_sha: HashMap::new(),
            order: VecDeque::new(),
            gnss: HashSet::new(),
            telemetry: HashSet::new(),
        }
    }

    /// How many uploads it may hold.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many uploads it holds now.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Remembers a stored upload, forgetting the oldest beyond capacity.
    pub(crate) fn insert(&mut self, summary: UploadSummary) {
        let id = summary.upload_id;
        if summary.status == UploadStatus::Accepted {
            self.accepted_by_sha.insert(summary.sha256.clone(), id);
        }
        if self.by_id.insert(id, summary).is_none() {
            self.order.push_back(id);
        }
        while self.by_id.len() > self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.forget(oldest);
        }
    }

    /// The stored upload `id`, if remembered.
    pub(crate) fn get(&self, id: &UploadId) -> Option<&UploadSummary> {
        self.by_id.get(id)
    }

    /// The accepted upload of these bytes, if remembered.
    pub(crate) fn accepted(&self, sha256: &str) -> Option<&UploadSummary> {
        self.accepted_by_sha
            .get(sha256)
            .and_then(|id| self.by_id.get(id))
    }

    /// Forgets `id` (evicted, or its upload forgotten by its contributor).
    pub(crate) fn forget(&mut self, id: UploadId) {
        if let Some(summary) = self.by_id.remove(&id)
            && self.accepted_by_sha.get(&summary.sha256) == Some(&id)
        {
            self.accepted_by_sha.remove(&summary.sha256);
        }
        self.gnss.remove(&id);
        self.telemetry.remove(&id);
        // `order` keeps the id until it reaches the front; a later insert
        // of the same id is then forgotten early, which only costs a read.
        if self.order.len() > 2 * self.capacity {
            let by_id = &self.by_id;
            self.order.retain(|id| by_id.contains_key(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceId;

    fn summary(n: u8, sha: &str, status: UploadStatus) -> UploadSummary {
        UploadSummary {
            upload_id: UploadId::new_random(),
            device_id: DeviceId::from_public_key(&[n; 32]),
            sha256: sha.into(),
            bytes: 1,
            status,
            reject_reason: None,
        }
    }

    #[test]
    fn it_holds_at_most_its_capacity_oldest_out_first() {
        let mut recent = Recent::new(3);
        let all: Vec<_> = (0..10)
            .map(|i| summary(i, &format!("sha{i}"), UploadStatus::Accepted))
            .collect();
        for s in &all {
            recent.insert(s.clone());
            assert!(recent.len() <= 3);
        }
        for (i, s) in all.iter().enumerate() {
            assert_eq!(recent.get(&s.upload_id).is_some(), i >= 7, "upload {i}");
            assert_eq!(recent.accepted(&s.sha256).is_some(), i >= 7, "sha {i}");
        }
        assert!(recent.order.len() <= 2 * recent.capacity() + 1);
    }

    #[test]
    fn a_duplicate_does_not_take_its_originals_hash() {
        let mut recent = Recent::new(8);
        let first = summary(1, "same", UploadStatus::Accepted);
        recent.insert(first.clone());
        recent.insert(summary(2, "same", UploadStatus::Duplicate));
        assert_eq!(
            recent.accepted("same").map(|s| s.upload_id),
            Some(first.upload_id)
        );
        recent.forget(first.upload_id);
        assert!(recent.accepted("same").is_none());
    }
}
