//! Group commit: the uploads finishing at the same moment share their
//! commits. Each caller queues its rows and waits for the commit lock; the
//! first to get it after rows were queued commits everything queued, one
//! Delta commit per table, each naming every upload it carries in its
//! `commitInfo` (`hexroad.uploads`), and hands each caller its outcome; the
//! others find theirs ready. While one group commits, the next gathers, so
//! the commits per upload fall as load rises, like a database's group
//! fsync. No checkpoint is written on this path (see `maintain`).
//!
//! The uploads are named in the commit's information rather than as Delta
//! application transactions: a transaction stays in every later snapshot
//! and checkpoint, one per upload ever made, and every commit's snapshot
//! update replays them all; the commit information is read only by the
//! writer looking at the commits made since its last look.

use std::collections::{HashMap, HashSet};

use deltalake::arrow::array::RecordBatch;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use tokio::sync::oneshot;

use super::recent::Recent;
use super::{CommitOutcome, Lake, UploadSummary};
use crate::schema::{self, TableName};
use crate::{Error, GnssPoint, Result, TelemetrySample, UploadId, UploadRecord, UploadStatus};

/// One upload's rows, waiting for its group.
pub(crate) struct Queued {
    record: UploadRecord,
    gnss: Vec<GnssPoint>,
    telemetry: Vec<TelemetrySample>,
    reply: oneshot::Sender<Result<CommitOutcome>>,
}

/// Why a group commit's caller got no outcome of its own.
fn lost() -> Error {
    Error::GroupCommit("it was interrupted".into())
}

/// The commit properties of every write on the ingest path: the uploads'
/// transactions, and no checkpoint or log cleanup inside the request.
pub(crate) fn quiet(transactions: Vec<Transaction>) -> CommitProperties {
    CommitProperties::default()
        .with_application_transactions(transactions)
        .with_create_checkpoint(false)
        .with_cleanup_expired_logs(Some(false))
}

/// What one group will write for one upload, decided before any commit.
struct Planned {
    record: UploadRecord,
    write_gnss: bool,
    write_telemetry: bool,
    outcome: Option<CommitOutcome>,
}

impl Lake {
    /// Queues an upload's rows and returns once the group that carries
    /// them is committed (see the module's documentation).
    pub(super) async fn commit_in_group(
        &self,
        record: UploadRecord,
        gnss: &[GnssPoint],
        telemetry: &[TelemetrySample],
    ) -> Result<CommitOutcome> {
        let (reply, mut outcome) = oneshot::channel();
        self.lock_queue().push(Queued {
            record,
            gnss: gnss.to_vec(),
            telemetry: telemetry.to_vec(),
            reply,
        });
        let _turn = self.commit_lock.lock().await;
        if let Ok(done) = outcome.try_recv() {
            return done;
        }
        let group = std::mem::take(&mut *self.lock_queue());
        self.commit_group(group).await;
        outcome.try_recv().unwrap_or_else(|_| Err(lost()))
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Commits a group and answers every caller in it.
    async fn commit_group(&self, group: Vec<Queued>) {
        let mut replies = Vec::with_capacity(group.len());
        let mut planned = Vec::with_capacity(group.len());
        let mut rows = Vec::with_capacity(group.len());
        let result = match self.history_of(&group).await {
            Ok(history) => {
                let recent = self.lock_recent();
                // Uploads earlier in this group count as stored for the
                // later ones: the same bytes twice in one group is a
                // duplicate too.
                let mut in_group = Known::default();
                for q in group {
                    let plan = plan(&recent, &history, &mut in_group, q.record);
                    planned.push(plan);
                    rows.push((q.gnss, q.telemetry));
                    replies.push(q.reply);
                }
                Ok(())
            }
            Err(e) => {
                replies.extend(group.into_iter().map(|q| q.reply));
                Err(e)
            }
        };
        let result = match result {
            Ok(()) => self.write_group(&mut planned, &rows).await,
            Err(e) => Err(e),
        };
        let mut plans = planned.into_iter();
        for reply in replies {
            let answer = match &result {
                Ok(()) => match plans.next() {
                    Some(plan) => Ok(plan
                        .outcome
                        .unwrap_or_else(|| CommitOutcome::Committed(plan.record.clone()))),
                    None => Err(lost()),
                },
                Err(e) => Err(Error::GroupCommit(e.full_message())),
            };
            // A caller that went away needs no answer.
            let _ = reply.send(answer);
        }
    }

    /// What `uploads` holds of the group's uploads that memory does not
    /// answer: every stored row with one of their content hashes (an
    /// upload stored under the same id has the same bytes, so one lookup
    /// by hash finds both the upload itself and an earlier accepted copy).
    async fn history_of(&self, group: &[Queued]) -> Result<Known> {
        let shas: Vec<String> = {
            let recent = self.lock_recent();
            let mut shas: Vec<String> = group
                .iter()
                .filter(|q| recent.get(&q.record.upload_id).is_none())
                .map(|q| q.record.sha256.clone())
                .collect();
            shas.sort_unstable();
            shas.dedup();
            shas
        };
        let mut history = Known::default();
        let started = std::time::Instant::now();
        let found = self.stored_by_sha(&shas).await?;
        tracing::debug!(
            keys = shas.len(),
            found = found.len(),
            ms = started.elapsed().as_millis() as u64,
            "looked up in uploads"
        );
        for stored in found {
            if stored.status == UploadStatus::Accepted {
                history
                    .accepted_by_sha
                    .insert(stored.sha256.clone(), stored.clone());
            }
            history.by_id.insert(stored.upload_id, stored);
        }
        if self
            .other_writers
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            // Not stored yet: a group on another node may have written
            // their rows and died before listing them.
            let unlisted: Vec<UploadId> = {
                let recent = self.lock_recent();
                group
                    .iter()
                    .map(|q| q.record.upload_id)
                    .filter(|id| recent.get(id).is_none() && !history.by_id.contains_key(id))
                    .collect()
            };
            if !unlisted.is_empty() {
                let (gnss, telemetry) = self.rows_cut_elsewhere(&unlisted).await?;
                let mut recent = self.lock_recent();
                recent.gnss.extend(gnss);
                recent.telemetry.extend(telemetry);
            }
        }
        Ok(history)
    }

    /// One commit per table for the whole group: GNSS, telemetry, then
    /// `uploads` (last, so an upload is listed only once its rows are in).
    async fn write_group(
        &self,
        planned: &mut [Planned],
        rows: &[(Vec<GnssPoint>, Vec<TelemetrySample>)],
    ) -> Result<()> {
        let mut gnss = Vec::new();
        let mut telemetry = Vec::new();
        let mut uploads = Vec::new();
        for (plan, (fixes, samples)) in planned.iter().zip(rows) {
            if plan.outcome.is_some() {
                continue;
            }
            let r = &plan.record;
            if plan.write_gnss && !fixes.is_empty() {
                gnss.push((
                    r.upload_id,
                    schema::gnss_batch(r.upload_id, &r.device_id, fixes)?,
                ));
            }
            if plan.write_telemetry && !samples.is_empty() {
                telemetry.push((
                    r.upload_id,
                    schema::telemetry_batch(r.upload_id, &r.device_id, samples)?,
                ));
            }
            uploads.push((r.upload_id, schema::uploads_batch(std::slice::from_ref(r))?));
        }
        // Noted before the first commit, cleared after the last (see
        // `inflight`): a crash in between is repaired at the next open.
        let writing: Vec<UploadId> = uploads.iter().map(|(id, _)| *id).collect();
        let note = if gnss.is_empty() && telemetry.is_empty() {
            None
        } else {
            Some(self.note_inflight(&writing).await?)
        };
        self.append_group(TableName::Gnss, gnss).await?;
        {
            let mut recent = self.lock_recent();
            for (plan, (fixes, _)) in planned.iter().zip(rows) {
                if plan.outcome.is_none() && plan.write_gnss && !fixes.is_empty() {
                    recent.gnss.insert(plan.record.upload_id);
                }
            }
        }
        self.append_group(TableName::Telemetry, telemetry).await?;
        {
            let mut recent = self.lock_recent();
            for (plan, (_, samples)) in planned.iter().zip(rows) {
                if plan.outcome.is_none() && plan.write_telemetry && !samples.is_empty() {
                    recent.telemetry.insert(plan.record.upload_id);
                }
            }
        }
        let stored_elsewhere = self.append_group(TableName::Uploads, uploads).await?;
        if let Some(note) = note {
            self.clear_inflight(note).await;
        }
        let mut recent = self.lock_recent();
        for plan in planned.iter_mut().filter(|p| p.outcome.is_none()) {
            let r = &plan.record;
            // Listed now: its rows need no tracking of their own.
            recent.gnss.remove(&r.upload_id);
            recent.telemetry.remove(&r.upload_id);
            // In the table now, written here or by another writer.
            recent.insert(UploadSummary::from(r));
            if stored_elsewhere.contains(&r.upload_id) {
                plan.outcome = Some(CommitOutcome::AlreadyStored(UploadSummary::from(r)));
            }
        }
        Ok(())
    }

    /// Appends several uploads' rows to `table` in one commit naming each
    /// upload in its `commitInfo`, leaving out the uploads another writer
    /// committed since this process last looked (what was committed before
    /// that, the group's lookup found: `history_of`). Returns the uploads
    /// left out.
    async fn append_group(
        &self,
        table: TableName,
        parts: Vec<(UploadId, RecordBatch)>,
    ) -> Result<HashSet<UploadId>> {
        if parts.is_empty() {
            return Ok(HashSet::new());
        }
        let mut guard = self.tables[table.index()].lock().await;
        let started = std::time::Instant::now();
        let seen = self.advance(&mut guard, table).await?;
        let current = guard.clone();
        let looked = started.elapsed();
        let committed_elsewhere = match (seen, current.version()) {
            (Some(seen), Some(now)) if now > seen => uploads_in(&current, seen + 1..=now)
                .await
                .map_err(Error::delta(table))?,
            _ => HashSet::new(),
        };
        let mut left_out = HashSet::new();
        let mut carried = Vec::new();
        let mut batches = Vec::new();
        for (id, batch) in parts {
            if committed_elsewhere.contains(&id) {
                left_out.insert(id);
            } else {
                carried.push(id.to_string());
                batches.push(batch);
            }
        }
        if batches.is_empty() {
            *guard = current;
            return Ok(left_out);
        }
        let carried_len = carried.len();
        let mut write = current.write(batches).with_save_mode(SaveMode::Append);
        if table == TableName::Uploads {
            write = write.with_writer_properties(super::compact::uploads_properties());
        }
        let updated = write
            .with_commit_properties(
                quiet(Vec::new())
                    .with_metadata([(UPLOADS_KEY.to_owned(), serde_json::json!(carried))]),
            )
            .await
            .map_err(Error::delta(table))?;
        *guard = updated;
        tracing::debug!(
            table = table.as_str(),
            uploads = carried_len,
            look_ms = looked.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "group committed"
        );
        Ok(left_out)
    }
}

/// The `commitInfo` key naming the uploads a group commit carries.
const UPLOADS_KEY: &str = "hexroad.uploads";

/// The uploads these commits carry: read from the commit files themselves,
/// so the cost is the commits since the last look. Commits written before
/// the uploads were named in `commitInfo` carry `ingest/<upload>`
/// application transactions instead; both are read.
async fn uploads_in(
    table: &deltalake::DeltaTable,
    versions: std::ops::RangeInclusive<u64>,
) -> deltalake::DeltaResult<HashSet<UploadId>> {
    let mut ids = HashSet::new();
    for version in versions {
        let Some(bytes) = table.log_store().read_commit_entry(version).await? else {
            continue;
        };
        for line in bytes.split(|b| *b == b'\n') {
            let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else {
                continue;
            };
            if let Some(named) = action["commitInfo"][UPLOADS_KEY].as_array() {
                ids.extend(
                    named
                        .iter()
                        .filter_map(|v| v.as_str()?.parse::<UploadId>().ok()),
                );
            }
            if let Some(app) = action["txn"]["appId"].as_str()
                && let Some(id) = app.strip_prefix("ingest/")
                && let Ok(id) = id.parse()
            {
                ids.insert(id);
            }
        }
    }
    Ok(ids)
}

/// Stored uploads by id and accepted ones by content hash: what `uploads`
/// holds of a group's hashes (`history_of`), and what the uploads earlier
/// in a group will have stored once it commits.
#[derive(Default)]
struct Known {
    by_id: HashMap<UploadId, UploadSummary>,
    accepted_by_sha: HashMap<String, UploadSummary>,
}

/// Decides what one upload adds, from what the lake (in memory and in
/// `history`) and the group before it hold: nothing when it is stored
/// already, only its `uploads` row when its bytes were accepted from
/// another device.
fn plan(
    recent: &Recent,
    history: &Known,
    in_group: &mut Known,
    mut record: UploadRecord,
) -> Planned {
    let id = record.upload_id;
    if let Some(stored) = recent
        .get(&id)
        .or_else(|| history.by_id.get(&id))
        .or_else(|| in_group.by_id.get(&id))
    {
        return Planned {
            record,
            write_gnss: false,
            write_telemetry: false,
            outcome: Some(CommitOutcome::AlreadyStored(stored.clone())),
        };
    }
    let (has_gnss, has_telemetry) = (recent.gnss.contains(&id), recent.telemetry.contains(&id));
    let first = recent
        .accepted(&record.sha256)
        .or_else(|| history.accepted_by_sha.get(&record.sha256))
        .or_else(|| in_group.accepted_by_sha.get(&record.sha256))
        .cloned();
    if record.status == UploadStatus::Accepted
        && let Some(first) = first.filter(|f| f.upload_id != id)
    {
        if first.device_id == record.device_id && !has_gnss && !has_telemetry {
            return Planned {
                record,
                write_gnss: false,
                write_telemetry: false,
                outcome: Some(CommitOutcome::AlreadyStored(first)),
            };
        }
        record.status = UploadStatus::Duplicate;
        record.duplicate_of = Some(first.upload_id);
        // Its bytes are the first upload's; the copy is not kept.
        record.object_key.clear();
        record.reject_reason = Some(format!(
            "duplicate_content: the same bytes were uploaded as {} by device {}",
            first.upload_id, first.device_id
        ));
    }
    let accepted = record.status == UploadStatus::Accepted;
    if accepted {
        in_group
            .accepted_by_sha
            .insert(record.sha256.clone(), UploadSummary::from(&record));
    }
    in_group.by_id.insert(id, UploadSummary::from(&record));
    Planned {
        write_gnss: accepted && !has_gnss,
        write_telemetry: accepted && !has_telemetry,
        record,
        outcome: None,
    }
}
