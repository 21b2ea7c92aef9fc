//! The service's state and router. Handlers live by resource: devices in
//! `devices.rs`, tus uploads in `uploads.rs`; what they take from a request
//! is checked by the extractors in `extract.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, head, post};
use hexroad_lake::{DeviceRecord, DeviceStatus, Lake, TableName};
use hexroad_wire::DeviceId;

use crate::auth::{self, NonceCache, Verified};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::shared::Shared;
use crate::tus::Staging;
use crate::{
    ApiError, Clock, IngestConfig, StartError, devices, enrol, openapi, probe, uploads, zones,
};

pub struct Ingest {
    pub(crate) lake: Arc<Lake>,
    pub(crate) config: IngestConfig,
    pub(crate) clock: Clock,
    devices: RwLock<HashMap<DeviceId, DeviceRecord>>,
    nonces: NonceCache,
    pub(crate) limits: Limits,
    pub(crate) staging: Staging,
    pub(crate) metrics: Metrics,
    /// Where finished uploads are assembled for validation.
    pub(crate) scratch: PathBuf,
    /// Registrations one at a time, so two racing for one key cannot both win.
    pub(crate) registration: tokio::sync::Mutex<()>,
    /// What this node shares with other ingest nodes; `None` on one machine.
    pub(crate) shared: Option<Shared>,
    /// The `devices` version the in-memory registry reflects.
    devices_at: AtomicU64,
}

impl Ingest {
    /// Gathers the service's state from the lake and the staging area;
    /// finished uploads are assembled under `scratch`. With `shared`, this
    /// node is one of several on the lake (see [`Shared`]).
    pub async fn open(
        lake: Arc<Lake>,
        config: IngestConfig,
        clock: Clock,
        scratch: PathBuf,
        shared: Option<Shared>,
    ) -> Result<Arc<Self>, StartError> {
        config.validate()?;
        hexroad_wire::settings::require(
            !config.public_authority.is_empty(),
            "public_authority",
            "must be set to the host[:port] devices reach this service at",
        )?;
        probe::init().map_err(StartError::Gstreamer)?;
        if shared.is_some() {
            lake.expect_other_writers();
        }
        // Read before the devices: a commit in between is applied twice,
        // which changes nothing, rather than missed.
        let devices_at = lake.table_version(TableName::Devices).await?;
        let devices = lake
            .devices()
            .await?
            .into_iter()
            .map(|d| (d.device_id.clone(), d))
            .collect();
        let staging =
            Staging::open(lake.blobs())
                .await
                .map_err(|source| hexroad_lake::Error::Blob {
                    key: "staging/".into(),
                    source,
                })?;
        let limits = Limits::new(
            (config.requests_per_second, config.request_burst),
            config.max_concurrent_patches,
            crate::limits::RegistrationRates {
                service: (config.registrations_per_second, config.registration_burst),
                address: (
                    config.address_registrations_per_second,
                    config.address_registration_burst,
                ),
                contributor: (
                    config.contributor_registrations_per_second,
                    config.contributor_registration_burst,
                ),
            },
        );
        Ok(Arc::new(Self {
            lake,
            config,
            clock,
            devices: RwLock::new(devices),
            nonces: NonceCache::default(),
            limits,
            staging,
            metrics: Metrics::default(),
            scratch,
            registration: tokio::sync::Mutex::new(()),
            shared,
            devices_at: AtomicU64::new(devices_at),
        }))
    }

    /// Follows the `devices` table's commits until `stop`, so a device
    /// registered or revoked through another node is known here within
    /// `device_refresh`. Only needed with other nodes (`shared`).
    pub async fn follow_devices(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let Some(every) = self.shared.as_ref().map(|s| s.device_refresh) else {
            return;
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.refresh_devices().await {
                tracing::warn!(error = %e, "following the devices table");
            }
        }
    }

    /// Applies the device rows committed since the last look; when those
    /// commits are no longer kept, reads the whole table again.
    pub async fn refresh_devices(&self) -> Result<(), hexroad_lake::Error> {
        let since = self.devices_at.load(Ordering::Acquire);
        let (version, records) = match self.lake.devices_since(since).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "reading all devices again");
                let version = self.lake.table_version(TableName::Devices).await?;
                (version, self.lake.devices().await?)
            }
        };
        for record in records {
            self.remember_device(record);
        }
        self.devices_at.store(version, Ordering::Release);
        Ok(())
    }

    /// Checks a request's signature, covering `required` beyond the basics.
    pub(crate) fn verify(&self, parts: &Parts, required: &[&str]) -> Result<Verified, ApiError> {
        let expect = auth::Expect {
            now: (self.clock)(),
            max_age_s: self.config.signature_max_age.as_secs(),
            skew_s: self.config.clock_skew.as_secs(),
            authority: &self.config.public_authority,
        };
        auth::verify(parts, &expect, required).inspect_err(|e| {
            self.metrics
                .inc("hexroad_signature_failures_total", &[("reason", e.code)]);
        })
    }

    /// Refuses a used nonce (on any node, when shared), then charges the
    /// device's rate limit.
    pub(crate) async fn admit(&self, v: &Verified) -> Result<(), ApiError> {
        let spent = match &self.shared {
            Some(shared) => shared.spend(v.device.as_str(), &v.nonce).await,
            None => self.nonces.admit(
                v,
                (self.clock)(),
                self.config.signature_window_s(),
                self.config.max_held_nonces,
            ),
        };
        spent.inspect_err(|e| {
            self.metrics
                .inc("hexroad_signature_failures_total", &[("reason", e.code)]);
        })?;
        self.limits.take_request(&v.device, Instant::now())
    }

    pub(crate) fn device(&self, id: &DeviceId) -> Option<DeviceRecord> {
        let devices = self.devices.read().unwrap_or_else(|e| e.into_inner());
        devices.get(id).cloned()
    }

    /// Records a device's latest row. A revocation is final, and an older
    /// row (a commit read twice, or late) does not undo a newer one.
    pub(crate) fn remember_device(&self, record: DeviceRecord) {
        let mut devices = self.devices.write().unwrap_or_else(|e| e.into_inner());
        let newer = devices.get(&record.device_id).is_none_or(|known| {
            known.status != DeviceStatus::Revoked
                && (record.status == DeviceStatus::Revoked || record.changed_at >= known.changed_at)
        });
        if newer {
            devices.insert(record.device_id.clone(), record);
        }
    }

    /// Verifies a request from a registered, active device.
    pub(crate) async fn authenticate(
        &self,
        parts: &Parts,
        required: &[&str],
    ) -> Result<DeviceRecord, ApiError> {
        let v = self.verify(parts, required)?;
        let record = match self.device(&v.device) {
            None => {
                return Err(ApiError::forbidden(
                    "unknown_device",
                    format!(
                        "device {} is not registered: POST /v1/devices first",
                        v.device
                    ),
                ));
            }
            Some(r) if r.status == DeviceStatus::Revoked => {
                return Err(ApiError::forbidden(
                    "revoked_device",
                    format!("device {} has been revoked", v.device),
                ));
            }
            Some(r) => r,
        };
        self.admit(&v).await?;
        Ok(record)
    }
}

/// The service's routes over `state`.
pub fn app(state: Arc<Ingest>) -> Router {
    let tus = Router::new()
        .route(
            "/v1/uploads",
            post(uploads::create).options(uploads::options),
        )
        .route(
            "/v1/uploads/{id}",
            head(uploads::head)
                .patch(uploads::patch)
                .delete(uploads::terminate),
        )
        .layer(middleware::map_response(tus_resumable));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { axum::Json(openapi::document()) }),
        )
        .route("/v1/devices", post(devices::register))
        .route("/v1/devices/{id}", delete(devices::revoke))
        .route("/v1/contributors/{id}/key", post(enrol::rotate_key))
        .route("/v1/privacy-zones", post(zones::declare).get(zones::list))
        .route("/v1/privacy-zones/{id}", delete(zones::withdraw))
        .merge(tus)
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            count_requests,
        ))
        .with_state(state)
}

/// tus 1.0 wants `Tus-Resumable` on every answer, errors included.
async fn tus_resumable(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("tus-resumable", HeaderValue::from_static("1.0.0"));
    response
}

async fn count_requests(State(state): State<Arc<Ingest>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let response = next.run(req).await;
    state.metrics.inc(
        "hexroad_http_requests_total",
        &[
            ("method", &method),
            ("route", &route),
            ("status", response.status().as_str()),
        ],
    );
    response
}

async fn metrics(State(state): State<Arc<Ingest>>) -> impl IntoResponse {
    let (open, staged_bytes) = state.staging.held();
    let held_nonces = match &state.shared {
        // NaN: the shared store did not answer this scrape.
        Some(shared) => shared.nonces.held().await.map_or(f64::NAN, |n| n as f64),
        None => state.nonces.held() as f64,
    };
    let gauges = [
        (
            "hexroad_open_uploads",
            "Uploads created and not yet finished.",
            open as f64,
        ),
        (
            "hexroad_staged_bytes",
            "Bytes the unfinished uploads declared (reserved against the quotas).",
            staged_bytes as f64,
        ),
        (
            "hexroad_upload_locks",
            "Per-upload locks held in memory.",
            state.staging.cells() as f64,
        ),
        (
            "hexroad_held_nonces",
            "Nonces held against replays (by every node, in NATS, when clustered).",
            held_nonces,
        ),
    ];
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&gauges),
    )
}
