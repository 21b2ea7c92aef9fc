//! A device's HTTP client: registration and tus uploads that resume after a
//! cut connection or a server restart.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};

use crate::SimError;
use crate::device::DeviceKey;

/// Counters shared by every device of a run.
#[derive(Debug, Default)]
pub struct Stats {
    pub bytes_sent: AtomicU64,
    pub bytes_resent: AtomicU64,
    /// Bytes put on the wire by requests that were then cut.
    pub bytes_sent_before_cuts: AtomicU64,
    pub retries: AtomicU64,
    pub cuts: AtomicU64,
    pub replays_refused: AtomicU64,
    pub replays_accepted: AtomicU64,
    /// Round-trip time of each full-size chunk `PATCH`.
    pub chunk_times: Mutex<Vec<Duration>>,
}

/// How an upload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: `accepted` or `duplicate`.
    Acknowledged { upload_id: String, status: String },
    /// Refused at validation (422) with the server's code and message.
    Rejected { code: String, message: String },
}

/// One upload's declared shape.
pub struct UploadSpec<'a> {
    pub kind: &'a str,
    pub format: &'a str,
    pub drive_id: &'a str,
    pub filename: &'a str,
    pub data: Bytes,
}

/// A device talking to the ingest service.
pub struct DeviceClient<'a> {
    pub http: &'a reqwest::Client,
    pub server: &'a str,
    pub key: &'a DeviceKey,
    pub stats: &'a Stats,
    /// Cuts connections mid-body with this probability per chunk.
    pub flaky: Option<Mutex<ChaCha8Rng>>,
    pub chunk_size: usize,
    /// How long to keep retrying while the server is unreachable.
    pub retry_for: Duration,
    /// Replays each upload creation request verbatim, expecting a refusal.
    pub replayer: bool,
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

fn transient(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

impl<'a> DeviceClient<'a> {
    /// A well-behaved device: whole 1 MiB chunks, no cuts, no replays,
    /// retrying for 10 s while the server is unreachable.
    pub fn new(
        http: &'a reqwest::Client,
        server: &'a str,
        key: &'a DeviceKey,
        stats: &'a Stats,
    ) -> Self {
        Self {
            http,
            server,
            key,
            stats,
            flaky: None,
            chunk_size: 1 << 20,
            retry_for: Duration::from_secs(10),
            replayer: false,
        }
    }
}

impl DeviceClient<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.trim_end_matches('/'), path)
    }

    /// The server's `host[:port]`, as the `Host` header carries it: what
    /// every signature covers as `@authority`.
    fn authority(&self) -> String {
        let Ok(url) = reqwest::Url::parse(self.server) else {
            return String::new();
        };
        let host = url.host_str().unwrap_or_default();
        // `port()` is None for the scheme's default port, as in `Host`.
        match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }

    /// Sends one signed request, retrying on connection failures, 5xx and
    /// 429 (after Retry-After) until `retry_for` runs out. The request is
    /// re-signed each time, with a fresh nonce.
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Bytes>,
    ) -> Result<Reply, SimError> {
        let deadline = Instant::now() + self.retry_for;
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = self
                .send_once(method.clone(), path, headers, body.clone())
                .await;
            let wait = match &result {
                Ok(reply) if transient(reply.status) => reply
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(backoff),
                Ok(_) => return result,
                Err(_) => backoff,
            };
            if Instant::now() + wait > deadline {
                return match result {
                    Ok(reply) => Ok(reply),
                    Err(e) => Err(e),
                };
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
    ) -> reqwest::RequestBuilder {
        let signed = self
            .key
            .sign((method.as_str(), &self.authority(), path), headers, now_s());
        let mut req = self.http.request(method, self.url(path));
        for (name, value) in headers
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .chain(signed.iter().map(|(n, v)| (*n, v.as_str())))
        {
            req = req.header(name, value);
        }
        req.header("tus-resumable", "1.0.0")
    }

    async fn send_once(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<Bytes>,
    ) -> Result<Reply, SimError> {
        let mut req = self.build(method, path, headers);
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| SimError::Http(e.to_string()))?;
        reply(resp).await
    }

    /// Registers the device's key for a contributor, bound by the
    /// contributor's key and attested by the manufacturer when one is given.
    pub async fn register(
        &self,
        contributor: &str,
        make: &str,
        model: &str,
        vouchers: Option<&Vouchers<'_>>,
    ) -> Result<(), SimError> {
        let device = self.key.id();
        let contributor_id: hexroad_wire::ContributorId = contributor
            .parse()
            .map_err(|e: hexroad_wire::IdError| SimError::Http(e.to_string()))?;
        let mut registration = serde_json::json!({
            "public_key": device,
            "contributor_id": contributor,
            "make": make,
            "model": model,
        });
        let Some(vouchers) = vouchers else {
            return self.post_registration(&registration).await;
        };
        registration["binding"] = serde_json::json!({
            "contributor_key": vouchers.contributor_key.public_hex(),
            "signature": vouchers.contributor_key.sign_base64(
                &hexroad_wire::enrol::binding_message(&contributor_id, device),
            ),
        });
        if let Some((manufacturer, serial)) = vouchers.manufacturer {
            registration["attestation"] = serde_json::json!({
                "manufacturer": manufacturer.name,
                "serial": serial,
                "signature": manufacturer
                    .key
                    .sign_base64(&hexroad_wire::enrol::attestation_message(device, serial)),
            });
        }
        self.post_registration(&registration).await
    }

    async fn post_registration(&self, registration: &serde_json::Value) -> Result<(), SimError> {
        let body = serde_json::to_vec(registration).map_err(|e| SimError::Http(e.to_string()))?;
        let digest = hexroad_wire::signature::content_digest(&Sha256::digest(&body));
        let headers = [
            ("content-digest", digest),
            ("content-type", "application/json".to_owned()),
        ];
        let r = self
            .send(
                Method::POST,
                "/v1/devices",
                &headers,
                Some(Bytes::from(body)),
            )
            .await?;
        if r.status.is_success() {
            Ok(())
        } else {
            Err(SimError::Refused {
                what: "registration".into(),
                status: r.status.as_u16(),
                body: r.body,
            })
        }
    }

    /// `POST /v1/uploads` for `spec`: the new upload's location, and the
    /// sha256 of its bytes.
    async fn create(&self, spec: &UploadSpec<'_>) -> Result<(String, [u8; 32]), SimError> {
        let len = spec.data.len() as u64;
        let digest: [u8; 32] = Sha256::digest(&spec.data).into();
        let sha = hex::encode(digest);
        let meta = [
            ("kind", spec.kind),
            ("format", spec.format),
            ("sha256", sha.as_str()),
            ("drive_id", spec.drive_id),
            ("filename", spec.filename),
        ]
        .iter()
        .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
        .collect::<Vec<_>>()
        .join(",");
        let create_headers = [
            ("upload-length", len.to_string()),
            ("upload-metadata", meta),
        ];
        let created = self
            .send(Method::POST, "/v1/uploads", &create_headers, None)
            .await?;
        if created.status != StatusCode::CREATED {
            return Err(SimError::Refused {
                what: format!("creating a {} upload", spec.kind),
                status: created.status.as_u16(),
                body: created.body,
            });
        }
        if self.replayer {
            self.replay_creation(&create_headers).await;
        }
        let location = created
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| SimError::Http("201 without Location".into()))?
            .to_owned();
        Ok((location, digest))
    }

    /// Uploads one file with tus, resuming from the server's offset after
    /// any failure, until the server acknowledges or rejects it.
    pub async fn upload(&self, spec: UploadSpec<'_>) -> Result<Outcome, SimError> {
        let len = spec.data.len() as u64;
        let (location, digest) = self.create(&spec).await?;
        let mut offset = 0u64;
        let deadline_stuck = self.retry_for;
        let mut last_progress = Instant::now();
        loop {
            if last_progress.elapsed() > deadline_stuck {
                return Err(SimError::Http(format!(
                    "upload {location} made no progress for {deadline_stuck:?}"
                )));
            }
            let end = (offset + self.chunk_size as u64).min(len);
            let chunk = spec.data.slice(offset as usize..end as usize);
            let cut_at = self.cut_point(chunk.len());
            let started = Instant::now();
            // The whole file in one PATCH: its checksum is the upload's.
            let known = (offset == 0 && end == len).then_some(digest);
            let result = self
                .patch(&location, offset, chunk.clone(), known, cut_at)
                .await;
            let sent_now = cut_at.unwrap_or(chunk.len()) as u64;
            self.stats.bytes_sent.fetch_add(sent_now, Ordering::Relaxed);
            match result {
                Ok(r) if r.status == StatusCode::NO_CONTENT => {
                    if chunk.len() == self.chunk_size {
                        let mut times = self
                            .stats
                            .chunk_times
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        times.push(started.elapsed());
                    }
                    if let Some(done) = acknowledged(&r.headers) {
                        return Ok(done);
                    }
                    offset = header_u64(&r.headers, "upload-offset").unwrap_or(end);
                    last_progress = Instant::now();
                    continue;
                }
                Ok(r) if r.status == StatusCode::UNPROCESSABLE_ENTITY => {
                    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                    return Ok(Outcome::Rejected {
                        code: v["error"].as_str().unwrap_or("rejected").to_owned(),
                        message: v["message"].as_str().unwrap_or_default().to_owned(),
                    });
                }
                Ok(r) if r.status == StatusCode::NOT_FOUND => {
                    return Err(SimError::Refused {
                        what: format!("upload {location}"),
                        status: 404,
                        body: r.body,
                    });
                }
                Ok(r)
                    if r.status.is_client_error()
                        && r.status != StatusCode::CONFLICT
                        && r.status != StatusCode::TOO_MANY_REQUESTS
                        && r.status != StatusCode::BAD_REQUEST =>
                {
                    return Err(SimError::Refused {
                        what: format!("PATCH {location}"),
                        status: r.status.as_u16(),
                        body: r.body,
                    });
                }
                _ => {
                    // Cut, conflict, or a server that went away: ask where we are.
                    if cut_at.is_some() {
                        self.stats.cuts.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .bytes_sent_before_cuts
                            .fetch_add(sent_now, Ordering::Relaxed);
                    }
                    let head = self.send(Method::HEAD, &location, &[], None).await?;
                    if !head.status.is_success() {
                        return Err(SimError::Refused {
                            what: format!("HEAD {location}"),
                            status: head.status.as_u16(),
                            body: head.body,
                        });
                    }
                    if let Some(done) = acknowledged(&head.headers) {
                        return Ok(done);
                    }
                    let server_offset = header_u64(&head.headers, "upload-offset").unwrap_or(0);
                    let reached = offset + sent_now;
                    self.stats
                        .bytes_resent
                        .fetch_add(reached.saturating_sub(server_offset), Ordering::Relaxed);
                    if server_offset > offset {
                        last_progress = Instant::now();
                    }
                    offset = server_offset;
                }
            }
        }
    }

    fn cut_point(&self, len: usize) -> Option<usize> {
        let flaky = self.flaky.as_ref()?;
        let mut rng = flaky.lock().unwrap_or_else(|e| e.into_inner());
        (len > 1024 && rng.random_bool(0.25)).then(|| rng.random_range(len / 4..len * 3 / 4))
    }

    async fn patch(
        &self,
        location: &str,
        offset: u64,
        chunk: Bytes,
        digest: Option<[u8; 32]>,
        cut_at: Option<usize>,
    ) -> Result<Reply, SimError> {
        let digest = digest.unwrap_or_else(|| Sha256::digest(&chunk).into());
        let checksum = format!("sha256 {}", STANDARD.encode(digest));
        let headers = [
            ("upload-offset", offset.to_string()),
            ("upload-checksum", checksum),
            ("content-type", "application/offset+octet-stream".to_owned()),
        ];
        let req = self.build(Method::PATCH, location, &headers);
        let req = match cut_at {
            None => req.body(chunk),
            Some(at) => {
                // Send part of the body, let it reach the wire, then fail the
                // stream: the link drops mid-request, as on a flaky mobile link.
                use futures::StreamExt as _;
                let head = chunk.slice(..at);
                let sent = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(head) });
                let cut = futures::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "simulated cut",
                    ))
                });
                req.header("content-length", chunk.len().to_string())
                    .body(reqwest::Body::wrap_stream(sent.chain(cut)))
            }
        };
        let resp = req
            .send()
            .await
            .map_err(|e| SimError::Http(e.to_string()))?;
        reply(resp).await
    }

    /// Sends the same creation request twice with the same signature: the
    /// second must be refused as a replay.
    async fn replay_creation(&self, headers: &[(&str, String)]) {
        let signed = self
            .key
            .sign(("POST", &self.authority(), "/v1/uploads"), headers, now_s());
        let build = || {
            let mut req = self
                .http
                .post(self.url("/v1/uploads"))
                .header("tus-resumable", "1.0.0");
            for (name, value) in headers
                .iter()
                .map(|(n, v)| (*n, v.as_str()))
                .chain(signed.iter().map(|(n, v)| (*n, v.as_str())))
            {
                req = req.header(name, value);
            }
            req
        };
        let first = build().send().await;
        let second = build().send().await;
        if let (Ok(_), Ok(replayed)) = (first, second) {
            if replayed.status() == StatusCode::UNAUTHORIZED {
                self.stats.replays_refused.fetch_add(1, Ordering::Relaxed);
            } else if replayed.status().is_success() {
                self.stats.replays_accepted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn reply(resp: reqwest::Response) -> Result<Reply, SimError> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .text()
        .await
        .map_err(|e| SimError::Http(e.to_string()))?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

fn header_u64(h: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.parse().ok()
}

fn acknowledged(h: &reqwest::header::HeaderMap) -> Option<Outcome> {
    let status = h.get("hexroad-upload-status")?.to_str().ok()?.to_owned();
    if status == "rejected" {
        let reason = h
            .get("hexroad-reject-reason")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("rejected");
        let (code, message) = reason.split_once(": ").unwrap_or((reason, ""));
        return Some(Outcome::Rejected {
            code: code.to_owned(),
            message: message.to_owned(),
        });
    }
    let upload_id = h
        .get("hexroad-upload-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Some(Outcome::Acknowledged { upload_id, status })
}

/// What vouches for a device at registration.
pub struct Vouchers<'a> {
    /// The contributor account's key: binds the device to the account.
    pub contributor_key: &'a crate::device::VouchingKey,
    /// The manufacturer and the serial it attests, if the fleet plays one.
    pub manufacturer: Option<(&'a crate::device::Manufacturer, &'a str)>,
}
