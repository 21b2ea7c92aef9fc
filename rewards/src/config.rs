//! The reward rule's knobs (`[rewards]` in the settings file), documented
//! with a worked example in `rewards/README.md`.

use std::time::Duration;

use hexroad_wire::settings::{SettingError, require};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardConfig {
    /// What one epoch pays out, in integer base units.
    pub budget: u64,
    /// The H3 resolution coverage is counted at.
    pub resolution: u8,
    /// How long after an epoch's end its drives may still arrive.
    #[serde(with = "hexroad_wire::settings::duration_text")]
    pub grace: Duration,
    /// Freshness counts days since a cell was last covered, up to this.
    pub freshness_cap_days: u32,
    /// Extra weight, percent, for a cell never covered before.
    pub novelty_bonus_pct: u32,
    /// Each further drive of the same cell by the same contributor in the
    /// epoch counts this percent of the one before.
    pub redrive_pct: u32,
    /// No contributor receives more than this percent of the budget (raised
    /// when too few contributors share it to pay it all out).
    pub contributor_cap_pct: u32,
    /// GeoJSON polygons with a numeric `multiplier` property; a cell whose
    /// centre falls in one has its weight multiplied.
    pub regions: Option<std::path::PathBuf>,
    pub fraud: FraudConfig,
}

impl RewardConfig {
    /// The settings' sha256 (hex, over their JSON form), and the same as a
    /// positive number for the lake's epoch transactions.
    pub fn fingerprint(&self) -> (String, i64) {
        use sha2::Digest;
        let json = serde_json::to_vec(self).unwrap_or_default();
        let digest = sha2::Sha256::digest(&json);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        (hex::encode(digest), i64::from_be_bytes(first) & i64::MAX)
    }
}

impl Default for RewardConfig {
    fn default() -> Self {
        Self {
            budget: 1_000_000_000,
            resolution: 10,
            grace: Duration::from_secs(86_400),
            freshness_cap_days: 90,
            novelty_bonus_pct: 100,
            redrive_pct: 50,
            contributor_cap_pct: 10,
            regions: None,
            fraud: FraudConfig::default(),
        }
    }
}

/// The fraud rules' thresholds; each rule is named in `fraud_flags.rule`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FraudConfig {
    /// `impossible_speed`: consecutive frames of one device implying more.
    pub max_speed_mps: f64,
    /// `speed_mismatch`: GNSS speed and `Vehicle.Speed` differing by more
    /// than this, km/h, in more than `speed_mismatch_share_pct` of a
    /// device's paired samples (at least `speed_mismatch_min_samples`).
    pub speed_mismatch_kmh: f64,
    pub speed_mismatch_share_pct: u32,
    pub speed_mismatch_min_samples: u32,
    /// `copied_drive`: an upload whose frames are this percent or more
    /// near-duplicates of another contributor's earlier frames.
    pub copied_share_pct: u32,
    /// `two_places`: one device's fixes in the same second, from two
    /// uploads, further apart than this.
    pub two_places_m: f64,
    /// `stationary_farming`: a contributor's published frames per covered
    /// cell above this (an honest pass gives a few dozen).
    pub farming_frames_per_cell: u32,
    /// Flagged devices earn nothing for the whole epoch (otherwise only
    /// their flagged frames are dropped).
    pub exclude_flagged_devices: bool,
}

impl Default for FraudConfig {
    fn default() -> Self {
        Self {
            max_speed_mps: 70.0,
            speed_mismatch_kmh: 20.0,
            speed_mismatch_share_pct: 50,
            speed_mismatch_min_samples: 30,
            copied_share_pct: 50,
            two_places_m: 1000.0,
            farming_frames_per_cell: 400,
            exclude_flagged_devices: true,
        }
    }
}

impl RewardConfig {
    /// Checks values a typo could make absurd, naming the bad key.
    pub fn validate(&self) -> Result<(), SettingError> {
        require(self.resolution <= 15, "resolution", "must be 0 to 15")?;
        require(
            self.freshness_cap_days > 0,
            "freshness_cap_days",
            "must be positive",
        )?;
        require(self.redrive_pct <= 100, "redrive_pct", "must be 0 to 100")?;
        require(
            (1..=100).contains(&self.contributor_cap_pct),
            "contributor_cap_pct",
            "must be 1 to 100",
        )?;
        require(
            self.fraud.max_speed_mps > 0.0,
            "fraud.max_speed_mps",
            "must be positive",
        )?;
        require(
            self.fraud.two_places_m > 0.0,
            "fraud.two_places_m",
            "must be positive",
        )
    }
}
