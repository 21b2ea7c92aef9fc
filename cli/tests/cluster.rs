//! Several hexroad processes on one lake, coordinated through NATS
//! JetStream, with real parts started here: SeaweedFS (the lake's bucket),
//! `nats-server` (the work queue, nonces and upload leases), two ingest
//! nodes behind one host name (127.0.0.1 and 127.0.0.2 on one port, as a
//! DNS name with two records), vision workers taking work from the queue.
//! Nodes die by SIGKILL and the store goes away for a while; nothing
//! acknowledged may be lost or doubled.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hexroad_dashcam_sim::DeviceKey;
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};

mod common;
use common::{S3Location, assert_tables_match, hexroad, on_data, sql_u64, wait_processed};
#[path = "../../coord/tests/support/nats.rs"]
mod nats;
#[path = "../../lake/tests/support/seaweed.rs"]
mod seaweed;

/// The name devices reach ingest at; every node answers for it.
const HOST: &str = "ingest.hexroad.test";

/// A `hexroad serve --role …` process; killed (SIGKILL) when dropped.
struct Node {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Node {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The parts every node shares.
struct Cluster {
    store: seaweed::Seaweed,
    nats: nats::Nats,
    data: S3Location,
    /// The one port every ingest node listens on, each on its own address.
    port: u16,
    runtime: tokio::runtime::Runtime,
}

impl Cluster {
    fn start() -> Self {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let store = runtime.block_on(seaweed::Seaweed::start());
        let data = S3Location {
            url: store.location(),
            env: store.owned_env(),
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self {
            store,
            nats: nats::Nats::start(),
            data,
            port,
            runtime,
        }
    }

    fn authority(&self) -> String {
        format!("{HOST}:{}", self.port)
    }

    /// Starts `serve --role roles` listening on `listen`; returns once it
    /// says where it serves.
    fn node(&self, name: &str, roles: &str, listen: &str, env: &[(&str, &str)]) -> Node {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = on_data(
            &mut hexroad(&["serve", "--role", roles, "--listen", listen, "--data"]),
            &self.data,
        )
        .env("HEXROAD__CLUSTER__NATS_URL", &self.nats.url)
        .env("HEXROAD__CLUSTER__NODE", name)
        .env("HEXROAD__CLUSTER__UPLOAD_LEASE", "3s")
        .env("HEXROAD__CLUSTER__DEVICE_REFRESH", "200ms")
        .env("HEXROAD__INGEST__PUBLIC_AUTHORITY", self.authority())
        .env("HEXROAD__VISION__LEASE", "6s")
        .env("HEXROAD__VISION__POLL_INTERVAL", "200ms")
        .env("RUST_LOG", "info,buoyant_kernel=off,ort=error")
        // Plain `key=value` fields, read back from the log.
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log.reopen().unwrap()))
        .spawn()
        .unwrap();
        let line = common::first_line(&mut child);
        let node = Node { child, log };
        assert!(
            line.contains("serving on"),
            "{name}: {line:?}\n{}",
            node.log()
        );
        node
    }

    /// An ingest node on `ip`, at the shared port.
    fn ingest(&self, name: &str, ip: &str) -> Node {
        self.node(name, "ingest", &format!("{ip}:{}", self.port), &[])
    }

    /// A client whose requests for [`HOST`] go to `ip` only.
    fn client_to(&self, ip: &str) -> reqwest::Client {
        let address = SocketAddr::new(ip.parse::<IpAddr>().unwrap(), self.port);
        reqwest::Client::builder()
            .resolve(HOST, address)
            .build()
            .unwrap()
    }
}

/// One signed request from `key`, as a device sends it.
struct Signed<'a> {
    key: &'a DeviceKey,
    authority: String,
}

impl Signed<'_> {
    fn request(
        &self,
        client: &reqwest::Client,
        method: Method,
        path: &str,
        covered: &[(&str, String)],
    ) -> reqwest::RequestBuilder {
        let signature = self.key.sign(
            (method.as_str(), &self.authority, path),
            covered,
            chrono::Utc::now().timestamp(),
        );
        let mut request = client
            .request(method, format!("http://{}{path}", self.authority))
            .header("tus-resumable", "1.0.0");
        for (name, value) in covered.iter().chain(signature.iter()) {
            request = request.header(*name, value);
        }
        request
    }
}

/// A plausible GNSS track: one fix a second for `seconds`, 12 m/s north
/// through Helsinki, ending a minute ago.
fn gpx(seconds: i64) -> Vec<u8> {
    let end = chrono::Utc::now() - chrono::Duration::seconds(60);
    let mut out = String::from(
        "<?xml version=\"1.0\"?>\n<gpx version=\"1.1\" creator=\"test\" \
         xmlns=\"http://www.topografix.com/GPX/1/1\"><trk><trkseg>\n",
    );
    for i in 0..seconds {
        let t = end - chrono::Duration::seconds(seconds - 1 - i);
        let lat = 60.17 + i as f64 * 12.0 / 111_195.0;
        out.push_str(&format!(
            "<trkpt lat=\"{lat:.7}\" lon=\"24.9400000\"><ele>12.0</ele><time>{}</time>\
             <hdop>0.9</hdop></trkpt>\n",
            t.format("%Y-%m-%dT%H:%M:%SZ")
        ));
    }
    out.push_str("</trkseg></trk></gpx>\n");
    out.into_bytes()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn checksum(bytes: &[u8]) -> String {
    format!("sha256 {}", b64(&Sha256::digest(bytes)))
}

#[test]
fn an_upload_resumes_on_the_other_node_and_a_replay_there_is_refused() {
    let cluster = Cluster::start();
    let mut node_a = cluster.ingest("ingest-a", "127.0.0.1");
    let node_b = cluster.ingest("ingest-b", "127.0.0.2");
    let (to_a, to_b) = (
        cluster.client_to("127.0.0.1"),
        cluster.client_to("127.0.0.2"),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let key = DeviceKey::from_seed([7; 32]);
    let device = Signed {
        key: &key,
        authority: cluster.authority(),
    };
    let stats = hexroad_dashcam_sim::Stats::default();
    let server = format!("http://{}", cluster.authority());

    runtime.block_on(async {
        // Registered through A; B learns of the device from the lake.
        hexroad_dashcam_sim::DeviceClient::new(&to_a, &server, &key, &stats)
            .register("cluster-test", "Test", "two-nodes", None)
            .await
            .unwrap();

        let track = gpx(120);
        let fields = [
            ("kind", "gnss".to_owned()),
            ("format", "gpx".to_owned()),
            ("sha256", hex::encode(Sha256::digest(&track))),
            ("drive_id", "drive-1".to_owned()),
            ("filename", "drive-1.gpx".to_owned()),
        ];
        let metadata = fields
            .iter()
            .map(|(k, v)| format!("{k} {}", b64(v.as_bytes())))
            .collect::<Vec<_>>()
            .join(",");
        let created = device
            .request(
                &to_a,
                Method::POST,
                "/v1/uploads",
                &[
                    ("upload-length", track.len().to_string()),
                    ("upload-metadata", metadata),
                ],
            )
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED, "{}", node_a.log());
        let location = created.headers()["location"].to_str().unwrap().to_owned();
        // B knows the device registered through A, from the lake, and has
        // seen the upload at offset 0.
        let t0 = Instant::now();
        loop {
            let head = device
                .request(&to_b, Method::HEAD, &location, &[])
                .send()
                .await
                .unwrap();
            if head.status() == StatusCode::OK {
                assert_eq!(head.headers()["upload-offset"].to_str().unwrap(), "0");
                break;
            }
            assert_eq!(head.status(), StatusCode::FORBIDDEN);
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "B never learned of the device"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let half = track.len() / 2;
        let patch = |client: &reqwest::Client, offset: usize, body: Vec<u8>| {
            device
                .request(
                    client,
                    Method::PATCH,
                    &location,
                    &[
                        ("upload-offset", offset.to_string()),
                        ("upload-checksum", checksum(&body)),
                    ],
                )
                .header("content-type", "application/offset+octet-stream")
        };
        let first = patch(&to_a, 0, track[..half].to_vec())
            .body(track[..half].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(first.status(), StatusCode::NO_CONTENT);

        // A replay of a request A took is refused by B.
        let zones = device
            .request(&to_a, Method::GET, "/v1/privacy-zones", &[])
            .build()
            .unwrap();
        let replay = zones.try_clone().unwrap();
        assert_eq!(to_a.execute(zones).await.unwrap().status(), StatusCode::OK);
        let refused = to_b.execute(replay).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
        let refusal: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(refusal["error"], "replayed", "{refusal}");
        // B's metrics count the nonces A took too: one store.
        let metrics = to_b
            .get(format!("http://{}/metrics", cluster.authority()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let held: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("hexroad_held_nonces "))
            .unwrap_or_else(|| panic!("{metrics}"))
            .trim()
            .parse()
            .unwrap();
        assert!(held >= 4.0, "{held} nonces held");

        // The second half starts on A and goes silent: A holds the lease
        // when it dies.
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
        sender
            .send(Ok(track[half..half + 10].to_vec()))
            .await
            .unwrap();
        let body = reqwest::Body::wrap_stream(tokio_stream_of(receiver));
        let stalled = tokio::spawn(patch(&to_a, half, track[half..].to_vec()).body(body).send());
        tokio::time::sleep(Duration::from_millis(700)).await;
        node_a.kill();
        drop(sender);
        let _ = stalled.await;

        // B: where the upload stands, then the rest, once A's lease lapses.
        let head = device
            .request(&to_b, Method::HEAD, &location, &[])
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::OK, "{}", node_b.log());
        assert_eq!(
            head.headers()["upload-offset"].to_str().unwrap(),
            half.to_string()
        );
        let t0 = Instant::now();
        let mut busy = 0;
        let finished = loop {
            let reply = patch(&to_b, half, track[half..].to_vec())
                .body(track[half..].to_vec())
                .send()
                .await
                .unwrap();
            if reply.status() != StatusCode::SERVICE_UNAVAILABLE {
                break reply;
            }
            busy += 1;
            let body = reply.text().await.unwrap();
            assert!(
                body.contains("upload_busy") && body.contains("ingest-a"),
                "{body}"
            );
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "A's lease never lapsed"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert_eq!(
            finished.status(),
            StatusCode::NO_CONTENT,
            "{}",
            node_b.log()
        );
        assert!(busy > 0, "B waited out the dead node's lease");
        assert_eq!(
            finished.headers()["upload-offset"].to_str().unwrap(),
            track.len().to_string()
        );
    });
    assert_eq!(
        sql_u64(
            &cluster.data,
            "SELECT count(*) FROM uploads WHERE status = 'accepted'"
        ),
        1
    );
    assert_eq!(sql_u64(&cluster.data, "SELECT count(*) FROM gnss"), 120);
}

/// A receiver as the stream of a request body.
fn tokio_stream_of(
    mut receiver: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[test]
fn the_fleet_loses_nothing_when_an_ingest_node_a_vision_worker_and_the_store_die() {
    let mut cluster = Cluster::start();
    let mut node_a = cluster.ingest("ingest-a", "127.0.0.1");
    let _node_b = cluster.ingest("ingest-b", "127.0.0.2");
    let mut worker_1 = cluster.node("vision-1", "vision", "127.0.0.1:0", &[]);
    let _worker_2 = cluster.node("vision-2", "vision", "127.0.0.1:0", &[]);

    let fleet = hexroad(&[
        "sim",
        "--server",
        &format!("http://{}", cluster.authority()),
        "--addresses",
        "127.0.0.1,127.0.0.2",
        "--json",
        "--video",
        "320x240@5",
        "--duration",
        "60s",
        "--devices",
        "6",
        "--seed",
        "31",
        "--flaky",
        "--chunk-size",
        "65536",
    ])
    .env("RUST_LOG", "warn")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();

    // Once uploads are landing, ingest A dies (its devices move to B).
    let t0 = Instant::now();
    while sql_u64(&cluster.data, "SELECT count(*) FROM uploads") < 4 {
        assert!(t0.elapsed() < Duration::from_secs(240), "no uploads landed");
        std::thread::sleep(Duration::from_millis(300));
    }
    node_a.kill();
    // Vision worker 1 dies holding an upload it took from the queue: the
    // message comes back to worker 2 once its ack wait lapses.
    let taken = loop {
        let log = worker_1.log();
        if let Some(line) = log.lines().find(|l| l.contains("took queued upload")) {
            break line
                .split("upload_id=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap()
                .to_owned();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "worker 1 never took an upload:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    worker_1.kill();
    // The S3 server goes away for a while: uploads wait (503, Retry-After)
    // and vision work comes back later.
    cluster.store.stop();
    std::thread::sleep(Duration::from_secs(6));
    cluster.runtime.block_on(cluster.store.restart());

    let out = fleet.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_tables_match(&cluster.data, &report);
    wait_processed(&cluster.data, Duration::from_secs(300));
    assert_eq!(
        sql_u64(
            &cluster.data,
            "SELECT count(*) - count(DISTINCT frame_id) FROM frames"
        ),
        0,
        "a frame appears twice"
    );
    assert_eq!(
        sql_u64(
            &cluster.data,
            "SELECT count(*) FROM processing WHERE status = 'processed'"
        ),
        sql_u64(
            &cluster.data,
            "SELECT count(DISTINCT upload_id) FROM processing WHERE status = 'processed'"
        ),
        "an upload processed twice"
    );
    assert!(
        sql_u64(&cluster.data, "SELECT count(*) FROM frames") > 0,
        "frames were made"
    );
    assert_eq!(
        sql_u64(
            &cluster.data,
            &format!(
                "SELECT count(*) FROM processing WHERE upload_id = '{taken}' \
                 AND status IN ('processed', 'rejected')"
            ),
        ),
        1,
        "the upload worker 1 died holding got its verdict once"
    );
}
