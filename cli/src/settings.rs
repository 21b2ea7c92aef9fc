//! `hexroad serve` settings: defaults in code, an optional TOML file, and
//! `HEXROAD__SECTION__KEY` environment overrides, checked at start-up.

use std::path::Path;

use anyhow::{Context, Result, bail};
use hexroad_ingest::IngestConfig;
use hexroad_rewards::RewardConfig;
use hexroad_tiles::TilesConfig;
use hexroad_vision::VisionConfig;
use serde::{Deserialize, Serialize};

/// Everything `serve` reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Where tables and blobs live: a folder or an object-store URL.
    pub data: String,
    /// The address to listen on.
    pub listen: String,
    pub ingest: IngestConfig,
    pub vision: VisionConfig,
    pub sql: SqlSettings,
    pub tiles: TilesConfig,
    pub rewards: RewardConfig,
}

/// `POST /v1/sql` on the HTTP port and Arrow Flight SQL on its own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SqlSettings {
    /// Where Flight SQL listens; empty turns it off.
    pub flight_listen: String,
    /// Bearer token queries must carry; required when listening beyond loopback.
    pub token: Option<String>,
    /// A query's time limit, seconds.
    pub timeout_s: f64,
    /// Memory for a query's joins, sorts and aggregations, MiB.
    pub memory_mib: usize,
}

impl Default for SqlSettings {
    fn default() -> Self {
        Self {
            flight_listen: "127.0.0.1:50051".into(),
            token: None,
            timeout_s: 60.0,
            memory_mib: 1024,
        }
    }
}

impl SqlSettings {
    pub fn service(&self) -> Result<hexroad_sql::http::SqlService> {
        if !(self.timeout_s > 0.0 && self.timeout_s.is_finite()) {
            bail!("sql.timeout_s must be a positive number of seconds");
        }
        if self.token.as_deref().is_some_and(|t| t.len() < 16) {
            bail!("sql.token must be at least 16 characters");
        }
        Ok(hexroad_sql::http::SqlService {
            limits: hexroad_lake::QueryLimits {
                timeout: std::time::Duration::from_secs_f64(self.timeout_s),
                memory_bytes: self.memory_mib.saturating_mul(1 << 20),
            },
            token: self.token.clone(),
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data: "./data".into(),
            listen: "127.0.0.1:8080".into(),
            ingest: IngestConfig::default(),
            vision: VisionConfig::default(),
            sql: SqlSettings::default(),
            tiles: TilesConfig::default(),
            rewards: RewardConfig::default(),
        }
    }
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
    let settings: Settings = toml::Value::Table(doc)
        .try_into()
        .context("invalid settings")?;
    settings
        .ingest
        .validate()
        .context("invalid settings in [ingest]")?;
    settings
        .vision
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid settings in [vision]")?;
    settings
        .sql
        .service()
        .context("invalid settings in [sql]")?;
    settings
        .tiles
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid settings in [tiles]")?;
    settings
        .rewards
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid settings in [rewards]")?;
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
        assert!(err.contains("max_concurrent_patches"), "{err}");
    }
}
