//! `[cluster]`: several hexroad processes on one data location, coordinated
//! through NATS JetStream. Empty `nats_url` (the default) is one machine:
//! nonces, upload locks and work discovery stay in-process, as they always
//! were.

use std::time::Duration;

use anyhow::{Context, Result};
use hexroad_coord::{Coordination, WorkQueue};
use hexroad_wire::settings::{SettingError, require};
use serde::{Deserialize, Serialize};

/// How this process finds the others.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// NATS with JetStream, `nats://host:4222` (several comma-separated for
    /// a NATS cluster); empty runs on one machine.
    pub nats_url: String,
    /// Names this deployment's buckets and streams, so several deployments
    /// can share one NATS.
    pub prefix: String,
    /// This process's name in leases and logs; empty: host name and pid.
    pub node: String,
    /// How long an ingest node's lease on an upload it is receiving lasts
    /// unrenewed: after a node dies, its devices resume elsewhere this much
    /// later.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub upload_lease: Duration,
    /// How often an ingest node reads the devices other nodes registered or
    /// revoked.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub device_refresh: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            nats_url: String::new(),
            prefix: "hexroad".into(),
            node: String::new(),
            upload_lease: Duration::from_secs(15),
            device_refresh: Duration::from_secs(1),
        }
    }
}

impl ClusterSettings {
    /// Checks the section, naming the bad key.
    pub fn validate(&self) -> Result<(), SettingError> {
        require(
            hexroad_coord::valid_prefix(&self.prefix),
            "prefix",
            "must be letters, digits, '_' or '-'",
        )?;
        require(
            self.upload_lease >= Duration::from_secs(1),
            "upload_lease",
            "must be at least 1s",
        )?;
        require(
            !self.device_refresh.is_zero(),
            "device_refresh",
            "must be positive",
        )
    }

    /// Whether other processes share this data location through NATS.
    pub fn enabled(&self) -> bool {
        !self.nats_url.trim().is_empty()
    }

    /// This process's name.
    pub fn node_name(&self) -> String {
        if !self.node.is_empty() {
            return self.node.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default();
        format!(
            "{}-{}",
            if host.is_empty() { "hexroad" } else { &host },
            std::process::id()
        )
    }

    /// Connects to NATS, or `None` on one machine.
    pub async fn connect(&self) -> Result<Option<Coordination>> {
        if !self.enabled() {
            return Ok(None);
        }
        let coordination = Coordination::connect(&self.nats_url, &self.node_name(), &self.prefix)
            .await
            .context("cluster.nats_url")?;
        Ok(Some(coordination))
    }
}

/// The vision work queue, whose ack wait is the vision lease.
pub async fn work_queue(
    coordination: &Coordination,
    vision: &hexroad_vision::VisionConfig,
) -> Result<WorkQueue> {
    coordination
        .work_queue(vision.lease, hexroad_vision::worker::MAX_DELIVERIES)
        .await
        .context("opening the vision work queue")
}

/// What an ingest node shares with the others.
pub async fn ingest_shared(
    settings: &ClusterSettings,
    coordination: &Coordination,
    ingest: &hexroad_ingest::IngestConfig,
    vision: &hexroad_vision::VisionConfig,
) -> Result<hexroad_ingest::Shared> {
    let window = Duration::from_secs(ingest.signature_window_s());
    Ok(hexroad_ingest::Shared {
        node: settings.node_name(),
        nonces: coordination
            .nonces(window, ingest.max_held_nonces)
            .await
            .context("opening the shared nonce store")?,
        leases: coordination
            .leases(settings.upload_lease)
            .await
            .context("opening the upload leases")?,
        queue: Some(work_queue(coordination, vision).await?),
        device_refresh: settings.device_refresh,
    })
}
