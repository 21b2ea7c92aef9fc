//! `hexroad serve` settings: defaults in code, an optional TOML file, and
//! `HEXROAD__SECTION__KEY` environment overrides, checked at start-up.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hexroad_http::ServeLimits;
use hexroad_ingest::IngestConfig;
use hexroad_rewards::RewardConfig;
use hexroad_tiles::TilesConfig;
use hexroad_vision::VisionConfig;
use hexroad_wire::settings::{SettingError, require};
use serde::{Deserialize, Serialize};

/// Everything `serve` reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where tables and blobs live: a folder or `s3://bucket/prefix`.
    pub data: String,
    /// How to reach an `s3://` data location.
    pub storage: hexroad_lake::StorageSettings,
    /// The address to listen on.
    pub listen: String,
    /// A local folder for files in the making (assembled uploads, videos
    /// being decoded); empty means the system's temporary folder.
    pub scratch: String,
    /// Limits on every connection to the HTTP listener.
    pub server: ServeLimits,
    pub ingest: IngestConfig,
    pub vision: VisionConfig,
    pub sql: SqlSettings,
    pub tiles: TilesConfig,
    pub rewards: RewardConfig,
    pub privacy: PrivacySettings,
    /// Compaction, checkpoints, log cleanup and vacuum of the tables.
    pub lake: hexroad_lake::Maintenance,
    /// Other processes on this data location (NATS), if any.
    pub cluster: crate::cluster::ClusterSettings,
}

/// What is kept off every public surface (`[privacy]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PrivacySettings {
    /// Within this many metres of where a drive began or ended (homes,
    /// workplaces) no frame is published and no fix drawn.
    pub radius_m: f64,
}

impl Default for PrivacySettings {
    fn default() -> Self {
        Self { radius_m: 500.0 }
    }
}

/// `POST /v1/sql` on the HTTP port and Arrow Flight SQL on its own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SqlSettings {
    /// Where Flight SQL listens; empty turns it off.
    pub flight_listen: String,
    /// The operator's token: with it a query may name every table; without
    /// it, only the public views. None set: only the public role exists.
    pub token: Option<String>,
    /// Public aggregates (coverage cells) over fewer frames are left out.
    pub public_min_count: u64,
    /// A query's time limit.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub timeout: Duration,
    /// Memory for a query's joins, sorts and aggregations, MiB.
    pub memory_mib: usize,
    /// The most one answer may hold, MiB (413 `result_too_large` past it).
    pub max_result_mib: usize,
    /// The most one query may spill to disk (under the scratch folder), MiB.
    pub max_spill_mib: u64,
    /// Queries run at once, both transports together (429 past it).
    pub max_concurrent_queries: usize,
    /// Threads queries run on, apart from those serving uploads.
    pub threads: usize,
}

impl Default for SqlSettings {
    fn default() -> Self {
        Self {
            flight_listen: "127.0.0.1:50051".into(),
            token: None,
            public_min_count: 3,
            timeout: Duration::from_secs(60),
            memory_mib: 1024,
            max_result_mib: 64,
            max_spill_mib: 4096,
            max_concurrent_queries: 2,
            threads: 2,
        }
    }
}

impl SqlSettings {
    /// Checks the section, naming the bad key.
    pub fn validate(&self) -> Result<(), SettingError> {
        require(!self.timeout.is_zero(), "timeout", "must be positive")?;
        require(
            self.token.as_deref().is_none_or(|t| t.len() >= 16),
            "token",
            "must be at least 16 characters",
        )?;
        require(self.memory_mib > 0, "memory_mib", "must be positive")?;
        require(
            self.max_result_mib > 0,
            "max_result_mib",
            "must be positive",
        )?;
        require(
            self.max_concurrent_queries > 0,
            "max_concurrent_queries",
            "must be at least 1",
        )?;
        require(self.threads > 0, "threads", "must be at least 1")
    }

    /// What one query may use, spilling under `scratch`.
    pub fn limits(&self, scratch: Option<std::path::PathBuf>) -> hexroad_lake::QueryLimits {
        hexroad_lake::QueryLimits {
            timeout: self.timeout,
            memory_bytes: self.memory_mib.saturating_mul(1 << 20),
            max_result_bytes: self.max_result_mib.saturating_mul(1 << 20),
            spill_dir: scratch,
            max_spill_bytes: self.max_spill_mib.saturating_mul(1 << 20),
        }
    }

    /// The SQL service, with its own query runtime.
    pub fn service(&self, scratch: &std::path::Path) -> Result<hexroad_sql::http::SqlService> {
        let spill = scratch.join("sql-spill");
        std::fs::create_dir_all(&spill)
            .with_context(|| format!("creating the SQL spill folder {}", spill.display()))?;
        Ok(hexroad_sql::http::SqlService {
            limits: self.limits(Some(spill)),
            token: self.token.clone(),
            public_min_count: self.public_min_count,
            pool: hexroad_sql::QueryPool::new(self.max_concurrent_queries, self.threads)
                .context("starting the SQL query runtime")?,
            authority: None,
        })
    }
}

impl Settings {
    /// Checks every section, naming the bad key with its section.
    pub fn validate(&self) -> Result<(), SettingError> {
        self.server.validate().map_err(|e| e.within("server"))?;
        self.ingest.validate().map_err(|e| e.within("ingest"))?;
        self.vision.validate().map_err(|e| e.within("vision"))?;
        self.sql.validate().map_err(|e| e.within("sql"))?;
        self.tiles.validate().map_err(|e| e.within("tiles"))?;
        self.rewards.validate().map_err(|e| e.within("rewards"))?;
        self.lake.validate().map_err(|e| e.within("lake"))?;
        self.cluster.validate().map_err(|e| e.within("cluster"))?;
        require(
            self.privacy.radius_m.is_finite() && self.privacy.radius_m >= 0.0,
            "radius_m",
            "must be a number of metres, 0 or more",
        )
        .map_err(|e| e.within("privacy"))
    }
}

impl Settings {
    /// The scratch folder, created if missing.
    pub fn scratch_dir(&self) -> Result<std::path::PathBuf> {
        if self.scratch.is_empty() {
            return Ok(std::env::temp_dir());
        }
        let dir = std::path::PathBuf::from(&self.scratch);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("scratch: creating {}", dir.display()))?;
        Ok(dir)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data: "./data".into(),
            listen: "127.0.0.1:8080".into(),
            scratch: String::new(),
            server: ServeLimits::default(),
            ingest: IngestConfig::default(),
            vision: VisionConfig::default(),
            sql: SqlSettings::default(),
            tiles: TilesConfig::default(),
            rewards: RewardConfig::default(),
            privacy: PrivacySettings::default(),
            lake: hexroad_lake::Maintenance::default(),
            storage: hexroad_lake::StorageSettings::default(),
            cluster: crate::cluster::ClusterSettings::default(),
        }
    }
}

/// What a command runs on: the settings file and the environment, with
/// the command's `--data` (if given) over both.
pub fn load_for_data(file: Option<&Path>, data: Option<String>) -> Result<Settings> {
    let mut settings = load(file, std::env::vars())?;
    if let Some(data) = data {
        settings.data = data;
    }
    Ok(settings)
}

/// Reads settings from an optional file and the given environment variables.
pub fn load(file: Option<&Path>, env: impl Iterator<Item = (String, String)>) -> Result<Settings> {
    let mut doc = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading settings file {}", path.display()))?;
            text.parse::<toml::Table>()
                .with_context(|| format!("parsing settings file {}", path.display()))?
        }
        None => toml::Table::new(),
    };
    // The type of an overridden setting is the type of its default, so a
    // string stays a string whatever its characters ("123…" as a token).
    let defaults = toml::Value::try_from(Settings::default()).context("the default settings")?;
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("HEXROAD__") else {
            continue;
        };
        let keys: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let (last, parents) = match keys.split_last() {
            Some((last, parents)) if !last.is_empty() => (last, parents),
            _ => bail!("environment variable {name} names no setting"),
        };
        let mut table = &mut doc;
        for key in parents {
            table = table
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .with_context(|| format!("{name}: {key} is not a section"))?;
        }
        let default = keys
            .iter()
            .try_fold(&defaults, |at, key| at.get(key.as_str()));
        table.insert(last.clone(), typed_like(default, &value));
    }
    let mut settings: Settings = toml::Value::Table(doc)
        .try_into()
        .context("invalid settings")?;
    // One radius for every stage that publishes.
    settings.tiles.privacy_radius_m = settings.privacy.radius_m;
    settings.vision.privacy_radius_m = settings.privacy.radius_m;
    settings.validate()?;
    Ok(settings)
}

/// An environment value as the type its setting's default has; text that
/// does not fit stays text, so the settings check names the key.
fn typed_like(default: Option<&toml::Value>, text: &str) -> toml::Value {
    let as_text = || toml::Value::String(text.to_owned());
    match default {
        Some(toml::Value::Integer(_)) => text
            .parse()
            .map_or_else(|_| as_text(), toml::Value::Integer),
        Some(toml::Value::Float(_)) => text.parse().map_or_else(|_| as_text(), toml::Value::Float),
        Some(toml::Value::Boolean(_)) => text
            .parse()
            .map_or_else(|_| as_text(), toml::Value::Boolean),
        Some(toml::Value::Array(_) | toml::Value::Table(_)) => format!("v = {text}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(as_text),
        _ => as_text(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hexroad.example.toml");
        let settings = load(Some(&path), std::iter::empty()).unwrap();
        assert_eq!(settings, Settings::default());
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = [(
            "HEXROAD__INGEST__MAX_SPEED_MPS".to_owned(),
            "70.5".to_owned(),
        )];
        let settings = load(None, env.into_iter()).unwrap();
        assert_eq!(settings.ingest.max_speed_mps, 70.5);
    }

    /// An all-digit token used to become an integer and fail.
    #[test]
    fn an_all_digit_token_stays_a_string() {
        let env = [(
            "HEXROAD__SQL__TOKEN".to_owned(),
            "12345678901234567890".to_owned(),
        )];
        let settings = load(None, env.into_iter()).unwrap();
        assert_eq!(settings.sql.token.as_deref(), Some("12345678901234567890"));
    }

    #[test]
    fn a_bad_key_is_named() {
        let env = [("HEXROAD__INGEST__MAX_SPEEDS".to_owned(), "1".to_owned())];
        let err = format!("{:#}", load(None, env.into_iter()).unwrap_err());
        assert!(err.contains("max_speeds"), "{err}");
    }

    #[test]
    fn a_bad_value_is_named() {
        let env = [(
            "HEXROAD__INGEST__MAX_CONCURRENT_PATCHES".to_owned(),
            "0".to_owned(),
        )];
        let err = format!("{:#}", load(None, env.into_iter()).unwrap_err());
        assert_eq!(
            err,
            "setting ingest.max_concurrent_patches: must be at least 1"
        );
    }

    /// Every `HEXROAD__…` variable the Kubernetes manifests and the
    /// cluster script set is a real setting, with a value it accepts.
    #[test]
    fn the_deployments_set_only_real_settings() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut env = Vec::new();
        for file in ["deploy/kubernetes/hexroad.yaml", "scripts/cluster"] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, line) in lines.iter().enumerate() {
                let Some(at) = line.find("HEXROAD__") else {
                    continue;
                };
                if line.trim_start().starts_with('#') {
                    continue;
                }
                let rest = &line[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                    .unwrap_or(rest.len());
                let key = &rest[..end];
                // A value on the line (`KEY: value`, `KEY=value`) or on the
                // next (`- name: KEY` / `value: …`), else one from the pod.
                let inline = rest[end..]
                    .trim_start_matches([':', '='])
                    .trim()
                    .trim_matches('"');
                let next = lines
                    .get(i + 1)
                    .and_then(|l| l.trim().strip_prefix("value: "));
                // A shell default, `${VAR:-value}`, is the value.
                let default = inline
                    .split_once(":-")
                    .and_then(|(_, d)| d.split_once('}'))
                    .map(|(d, _)| d);
                let value = match (inline, next, default) {
                    (_, _, Some(d)) => d,
                    (v, _, _) if !v.is_empty() && !v.starts_with('$') && !v.contains('"') => v,
                    (_, Some(v), _) => v,
                    _ => "from-the-pod",
                };
                env.push((key.to_owned(), value.to_owned()));
            }
        }
        assert!(env.len() >= 5, "{env:?}");
        for (key, value) in env {
            let one = [(key.clone(), value.clone())];
            if let Err(e) = load(None, one.into_iter()) {
                panic!("{key}={value}: {e:#}");
            }
        }
    }

    #[test]
    fn durations_are_written_as_people_write_them() {
        let env = [("HEXROAD__SQL__TIMEOUT".to_owned(), "90s".to_owned())];
        let settings = load(None, env.into_iter()).unwrap();
        assert_eq!(settings.sql.timeout, Duration::from_secs(90));
        let env = [("HEXROAD__SQL__TIMEOUT".to_owned(), "90".to_owned())];
        let err = format!("{:#}", load(None, env.into_iter()).unwrap_err());
        assert!(err.contains("timeout"), "{err}");
    }
}
