//! What the ingest API tests share: a real service on loopback over a real
//! lake in a temp dir, and a device that signs its requests.

#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{Duration, Utc};
use ed25519_dalek::{Signer, SigningKey};
use hexroad_ingest::{Ingest, IngestConfig, app};
use hexroad_lake::Lake;
use hexroad_wire::signature::{self, SignatureParams};
use hexroad_wire::track;
use hexroad_wire::{DeviceId, GnssPoint};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};

pub struct Server {
    pub base: String,
    pub lake: Arc<Lake>,
    pub state: Arc<Ingest>,
    /// Seconds the server's clock runs ahead of the real one.
    pub clock_ahead: Arc<AtomicI64>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// The `host:port` signatures cover.
    pub fn authority(&self) -> &str {
        self.base.trim_start_matches("http://")
    }
}

pub async fn start(config: IngestConfig) -> Server {
    start_with(config, hexroad_http::ServeLimits::default()).await
}

/// The service as `hexroad serve` runs it: its public authority set to
/// the address it listens on, behind the same connection limits.
pub async fn start_with(mut config: IngestConfig, limits: hexroad_http::ServeLimits) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    config.public_authority = addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let lake = Arc::new(
        Lake::open(&dir.path().join("data").to_string_lossy())
            .await
            .unwrap(),
    );
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let clock_ahead = Arc::new(AtomicI64::new(0));
    let ahead = Arc::clone(&clock_ahead);
    let clock: hexroad_ingest::Clock =
        Arc::new(move || Utc::now() + Duration::seconds(ahead.load(Ordering::Relaxed)));
    let state = Ingest::open(Arc::clone(&lake), config, clock, scratch, None)
        .await
        .unwrap();
    let stop = std::future::pending::<()>();
    tokio::spawn(hexroad_http::serve(
        listener,
        app(Arc::clone(&state)),
        limits,
        stop,
    ));
    Server {
        base: format!("http://{addr}"),
        lake,
        state,
        clock_ahead,
        _dir: dir,
    }
}

pub struct Device {
    key: SigningKey,
    pub id: DeviceId,
}

impl Device {
    pub fn new(seed: u8) -> Self {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let id = DeviceId::from_public_key(key.verifying_key().as_bytes());
        Self { key, id }
    }

    /// Signature headers over @method, @path, @authority and the given
    /// headers.
    pub fn sign(
        &self,
        (method, authority, path): (&str, &str, &str),
        covered: &[(&str, String)],
        nonce: &str,
    ) -> Vec<(String, String)> {
        let mut components = vec![
            "@method".to_owned(),
            "@path".to_owned(),
            "@authority".to_owned(),
        ];
        components.extend(covered.iter().map(|(n, _)| (*n).to_owned()));
        let params = SignatureParams {
            components,
            created: Utc::now().timestamp(),
            nonce: nonce.to_owned(),
            keyid: self.id.to_string(),
            alg: "ed25519".into(),
        };
        let base = signature::signature_base(&params, |c| match c {
            "@method" => Some(method.to_owned()),
            "@path" => Some(path.to_owned()),
            "@authority" => Some(authority.to_owned()),
            n => covered
                .iter()
                .find(|(h, _)| *h == n)
                .map(|(_, v)| v.clone()),
        })
        .unwrap();
        let sig = self.key.sign(base.as_bytes());
        vec![
            ("signature-input".into(), params.header_value().unwrap()),
            (
                "signature".into(),
                signature::signature_header(&sig.to_bytes()),
            ),
        ]
    }
}

pub fn nonce() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub json: serde_json::Value,
}

pub async fn send(
    base: &str,
    method: Method,
    path: &str,
    headers: &[(String, String)],
    body: Vec<u8>,
) -> Reply {
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .header("tus-resumable", "1.0.0");
    for (n, v) in headers {
        req = req.header(n.as_str(), v.as_str());
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Reply {
        status,
        headers,
        json,
    }
}

/// A signed request from `device` covering `covered` (sent as headers too).
pub async fn signed(
    s: &Server,
    device: &Device,
    method: Method,
    path: &str,
    covered: &[(&str, String)],
    body: Vec<u8>,
) -> Reply {
    let headers = signed_headers(s, device, method.as_str(), path, covered, &nonce());
    send(&s.base, method, path, &headers, body).await
}

/// The covered headers and the signature over them, with `nonce`.
pub fn signed_headers(
    s: &Server,
    device: &Device,
    method: &str,
    path: &str,
    covered: &[(&str, String)],
    nonce: &str,
) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = covered
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.clone()))
        .collect();
    headers.extend(device.sign((method, s.authority(), path), covered, nonce));
    headers
}

pub async fn register(s: &Server, device: &Device) -> Reply {
    register_with(
        s,
        device,
        serde_json::json!({
            "public_key": device.id, "contributor_id": "alice", "make": "test", "model": "t1"
        }),
    )
    .await
}

/// `POST /v1/devices` with this body, signed by `device`.
pub async fn register_with(s: &Server, device: &Device, body: serde_json::Value) -> Reply {
    post_json(s, device, "/v1/devices", &body).await
}

/// A signed JSON `POST` (the body bound by `Content-Digest`).
pub async fn post_json(s: &Server, device: &Device, path: &str, body: &serde_json::Value) -> Reply {
    let body = serde_json::to_vec(body).unwrap();
    let digest = signature::content_digest(&Sha256::digest(&body));
    signed(
        s,
        device,
        Method::POST,
        path,
        &[("content-digest", digest)],
        body,
    )
    .await
}

pub fn metadata(kind: &str, format: &str, data: &[u8]) -> String {
    let sha = hex::encode(Sha256::digest(data));
    [
        ("kind", kind),
        ("format", format),
        ("sha256", sha.as_str()),
        ("drive_id", "d1"),
    ]
    .iter()
    .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
    .collect::<Vec<_>>()
    .join(",")
}

pub async fn create(s: &Server, d: &Device, length: usize, meta: String) -> Reply {
    signed(
        s,
        d,
        Method::POST,
        "/v1/uploads",
        &[
            ("upload-length", length.to_string()),
            ("upload-metadata", meta),
        ],
        Vec::new(),
    )
    .await
}

pub async fn patch(s: &Server, d: &Device, location: &str, offset: u64, body: &[u8]) -> Reply {
    let checksum = format!("sha256 {}", STANDARD.encode(Sha256::digest(body)));
    signed(
        s,
        d,
        Method::PATCH,
        location,
        &[
            ("upload-offset", offset.to_string()),
            ("upload-checksum", checksum),
            ("content-type", "application/offset+octet-stream".into()),
        ],
        body.to_vec(),
    )
    .await
}

/// Uploads `data` whole and returns the final PATCH's reply.
pub async fn upload(s: &Server, d: &Device, kind: &str, format: &str, data: &[u8]) -> Reply {
    upload_declaring(s, d, kind, format, data, metadata(kind, format, data)).await
}

pub async fn upload_declaring(
    s: &Server,
    d: &Device,
    kind: &str,
    format: &str,
    data: &[u8],
    meta: String,
) -> Reply {
    let _ = (kind, format);
    let created = create(s, d, data.len(), meta).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.json);
    let location = created.headers["location"].to_str().unwrap().to_owned();
    patch(s, d, &location, 0, data).await
}

pub fn track_points(start: chrono::DateTime<Utc>, lat: f64, lon: f64, n: usize) -> Vec<GnssPoint> {
    (0..n)
        .map(|i| GnssPoint {
            ts: start + Duration::seconds(i as i64),
            lat: lat + i as f64 * 5e-5,
            lon,
            alt: Some(10.0),
            speed: Some(5.5),
            heading: Some(0.0),
            hdop: Some(0.9),
        })
        .collect()
}

pub fn gpx(lat: f64, lon: f64, start: chrono::DateTime<Utc>) -> Vec<u8> {
    track::write_gpx(&track_points(start, lat, lon, 20), "test").into_bytes()
}

pub async fn count(s: &Server, sql: &str) -> i64 {
    let out = s.lake.query(sql).await.unwrap();
    let col = out.batches[0].column(0);
    col.as_any()
        .downcast_ref::<hexroad_lake::arrow::array::Int64Array>()
        .unwrap()
        .value(0)
}

pub fn assert_error(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{:?}", r.json);
    assert_eq!(r.json["error"], code, "{:?}", r.json);
    assert!(
        r.json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{:?}",
        r.json
    );
}

/// Opens a signed PATCH of `body` on a raw socket and sends only the first
/// `sent` bytes of it: the caller then holds the socket silent or drops it.
pub async fn partial_patch(
    s: &Server,
    d: &Device,
    location: &str,
    body: &[u8],
    sent: usize,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let checksum = format!("sha256 {}", STANDARD.encode(Sha256::digest(body)));
    let covered = [
        ("upload-offset", "0".to_owned()),
        ("upload-checksum", checksum),
        ("content-type", "application/offset+octet-stream".to_owned()),
    ];
    let headers = signed_headers(s, d, "PATCH", location, &covered, &nonce());
    let mut head = format!(
        "PATCH {location} HTTP/1.1\r\nhost: {}\r\ntus-resumable: 1.0.0\r\ncontent-length: {}\r\n",
        s.authority(),
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(s.authority()).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..sent]).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

/// HEAD of an upload, failing the test if no answer comes within 20 s
/// (a wedged upload never answers).
pub async fn head_within(s: &Server, d: &Device, location: &str) -> Reply {
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        signed(s, d, Method::HEAD, location, &[], Vec::new()),
    )
    .await
    .expect("HEAD did not answer: the upload is wedged")
}

/// Objects under `prefix` in the lake's blob store.
pub async fn objects_under(s: &Server, prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let path = hexroad_lake::object_store::path::Path::from(prefix);
    s.lake
        .blobs()
        .list(Some(&path))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap()
}
