//! The vision work queue: one message per accepted video or frame bundle.

use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config as StreamConfig, DiscardPolicy, RetentionPolicy};
use async_nats::jetstream::{AckKind, Message};
use futures::StreamExt;

use crate::{Coordination, Error, Result, request};

/// A JetStream work-queue stream and the one durable pull consumer every
/// vision worker shares: each message goes to one worker at a time, and
/// comes back after the ack wait if that worker neither acks nor reports
/// progress (it died).
#[derive(Clone)]
pub struct WorkQueue {
    jetstream: async_nats::jetstream::Context,
    subject: String,
    consumer: PullConsumer,
}

/// One delivery of a queued upload.
#[derive(Debug)]
pub struct Work {
    message: Message,
    /// What ingest published: the upload's id.
    pub upload: String,
    /// How many times this message has been delivered, this one included.
    pub delivered: i64,
    /// How long since ingest queued it (what the queue adds to an
    /// upload's way to the map).
    pub queued_for: Duration,
}

/// The header carrying when a message was queued, in Unix milliseconds.
const QUEUED_AT: &str = "Hexroad-Queued-At";

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The limits of the queue itself: a backlog this large means the vision
/// tier is down, and ingest stops queueing (the lake still lists the work).
const MAX_QUEUED: i64 = 1_000_000;

impl Coordination {
    /// The vision work queue. `ack_wait` is a worker's lease on a message;
    /// after `max_deliver` deliveries a message is dropped (the lake's
    /// claims have by then recorded the upload as failed).
    pub async fn work_queue(&self, ack_wait: Duration, max_deliver: i64) -> Result<WorkQueue> {
        let name = self.named("vision");
        let subject = format!("{}.vision.uploads", self.prefix);
        let setup = |what: &str| {
            let what = format!("{what} {name}");
            move |e: String| Error::Setup { what, message: e }
        };
        let stream = self
            .jetstream
            .get_or_create_stream(StreamConfig {
                name: name.clone(),
                description: Some("hexroad: uploads waiting for the vision stage".into()),
                subjects: vec![subject.clone()],
                retention: RetentionPolicy::WorkQueue,
                max_messages: MAX_QUEUED,
                discard: DiscardPolicy::New,
                // Ingest may publish one upload twice (a retried finish):
                // the second within this window is dropped by its id.
                duplicate_window: Duration::from_secs(600),
                ..Default::default()
            })
            .await
            .map_err(|e| setup("stream")(e.to_string()))?;
        let config = PullConfig {
            durable_name: Some("workers".into()),
            description: Some("hexroad vision workers".into()),
            ack_policy: AckPolicy::Explicit,
            ack_wait,
            max_deliver,
            ..Default::default()
        };
        let consumer = stream
            .get_or_create_consumer("workers", config.clone())
            .await
            .map_err(|e| setup("consumer")(e.to_string()))?;
        Ok(WorkQueue {
            jetstream: self.jetstream.clone(),
            subject,
            consumer,
        })
    }
}

impl WorkQueue {
    /// Queues `upload` for the vision stage, once: a second publish of the
    /// same id within the duplicate window is dropped by the server.
    /// Returns when the server has stored it.
    pub async fn publish(&self, upload: &str) -> Result<()> {
        let message = PublishMessage::build()
            .payload(upload.to_owned().into())
            .message_id(upload)
            .header(QUEUED_AT, unix_ms().to_string().as_str());
        self.jetstream
            .send_publish(self.subject.clone(), message)
            .await
            .map_err(|e| request("publish")(e.to_string()))?
            .await
            .map_err(|e| request("publish acknowledgement")(e.to_string()))?;
        Ok(())
    }

    /// The next upload to process, waiting up to `wait` for one.
    pub async fn next(&self, wait: Duration) -> Result<Option<Work>> {
        let mut batch = self
            .consumer
            .fetch()
            .max_messages(1)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| request("fetch")(e.to_string()))?;
        let Some(message) = batch.next().await else {
            return Ok(None);
        };
        let message = message.map_err(|e| request("fetch")(e.to_string()))?;
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        let upload = String::from_utf8_lossy(&message.payload).into_owned();
        let queued_at = message
            .headers
            .as_ref()
            .and_then(|h| h.get(QUEUED_AT))
            .and_then(|v| v.as_str().parse::<u64>().ok())
            .unwrap_or_else(unix_ms);
        Ok(Some(Work {
            message,
            upload,
            delivered,
            queued_for: Duration::from_millis(unix_ms().saturating_sub(queued_at)),
        }))
    }

    /// Messages waiting and delivered but not yet acknowledged: what an
    /// autoscaler (KEDA's JetStream scaler) watches.
    pub async fn backlog(&self) -> Result<(u64, usize)> {
        let mut consumer = self.consumer.clone();
        let info = consumer
            .info()
            .await
            .map_err(|e| request("consumer info")(e.to_string()))?;
        Ok((info.num_pending, info.num_ack_pending))
    }
}

impl Work {
    /// Done: the upload's verdict is in the lake. The server removes the
    /// message.
    pub async fn ack(&self) -> Result<()> {
        self.message
            .double_ack()
            .await
            .map_err(|e| request("ack")(e.to_string()))
    }

    /// Still working: the ack wait starts again, so the message is not
    /// handed to another worker.
    pub async fn progress(&self) -> Result<()> {
        self.message
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| request("progress")(e.to_string()))
    }

    /// Not now: deliver again after `delay` (to any worker).
    pub async fn retry_after(&self, delay: Duration) -> Result<()> {
        self.message
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| request("nak")(e.to_string()))
    }

    /// A handle that reports progress from another task.
    pub fn progress_handle(&self) -> Progress {
        Progress(self.message.clone())
    }
}

/// Reports progress on one delivery (see [`Work::progress`]).
#[derive(Clone, Debug)]
pub struct Progress(Message);

impl Progress {
    pub async fn report(&self) -> Result<()> {
        self.0
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| request("progress")(e.to_string()))
    }
}
