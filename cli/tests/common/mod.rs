//! What the end-to-end tests share: the `hexroad` binary run from the
//! repository root, a `serve` process, and SQL answers as JSON.

// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hexroad")
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// `hexroad …` run from the repository root, where the set-up put `datasets/`.
pub fn hexroad(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.current_dir(root())
        .args(args)
        .env("RUST_LOG", "warn,buoyant_kernel=off,ort=error");
    cmd
}

/// A `hexroad serve` process; killed (SIGKILL) when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `hexroad serve` and waits for the line saying where it listens.
pub fn serve(data: &Path, listen: &str, env: &[(&str, &str)]) -> Server {
    let mut child = hexroad(&["serve", "--listen", listen, "--data"])
        .arg(data)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("serve printed {line:?}"))
        .to_owned();
    Server {
        child,
        base: format!("http://{addr}"),
    }
}

/// Runs `cmd` to its end; it must succeed (its stderr is the failure message).
pub fn succeed(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd.get_args().collect::<Vec<_>>(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `hexroad sql --format json`, which must succeed.
pub fn sql(data: &Path, query: &str) -> Vec<Value> {
    let out = succeed(
        hexroad(&["sql", "--format", "json", "--data"])
            .arg(data)
            .arg(query),
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

/// The single number a `SELECT count(*) …` returns.
pub fn sql_u64(data: &Path, query: &str) -> u64 {
    sql(data, query)[0]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_u64()
        .unwrap()
}
