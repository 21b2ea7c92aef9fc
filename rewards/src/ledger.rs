//! The epoch's published ledger: each contributor's amount with its Merkle
//! proof, the root, and the table version it was computed from. Serialized
//! in a fixed field and row order, so the same epoch gives the same bytes.

use serde::{Deserialize, Serialize};

use crate::merkle;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    pub epoch: String,
    pub budget: u64,
    pub total: u64,
    /// The `frames` table version the epoch read (the one current at close).
    pub table_version: u64,
    /// Every table's version read, by name.
    pub table_versions: std::collections::BTreeMap<String, u64>,
    /// When the epoch closed (its end plus the grace period), RFC 3339.
    pub closed_at: String,
    pub merkle_root: String,
    /// sha256 of the reward settings the epoch was computed under: a rerun
    /// under other settings is refused rather than paying the epoch twice.
    #[serde(default)]
    pub settings_sha256: String,
    pub rewards: Vec<Reward>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reward {
    pub contributor_id: String,
    pub amount: u64,
    pub proof: Vec<String>,
}

impl Ledger {
    /// The ledger of `amounts` (any order; zero amounts are left out).
    pub fn new(
        epoch: &str,
        budget: u64,
        amounts: impl IntoIterator<Item = (String, u64)>,
        table_versions: std::collections::BTreeMap<String, u64>,
        closed_at: String,
    ) -> Self {
        let mut amounts: Vec<(String, u64)> = amounts.into_iter().filter(|(_, a)| *a > 0).collect();
        amounts.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let leaves: Vec<merkle::Hash> = amounts
            .iter()
            .map(|(who, amount)| merkle::leaf(epoch, who, *amount))
            .collect();
        let tree = merkle::Tree::new(leaves);
        let rewards = amounts
            .iter()
            .enumerate()
            .map(|(i, (who, amount))| Reward {
                contributor_id: who.clone(),
                amount: *amount,
                proof: tree.proof(i).iter().map(hex::encode).collect(),
            })
            .collect();
        Self {
            epoch: epoch.to_owned(),
            budget,
            total: amounts.iter().map(|(_, a)| a).sum(),
            table_version: table_versions.get("frames").copied().unwrap_or(0),
            table_versions,
            closed_at,
            merkle_root: hex::encode(tree.root()),
            settings_sha256: String::new(),
            rewards,
        }
    }

    /// The file's bytes: pretty JSON with a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Checks one contributor's proof against the root; returns the amount.
    pub fn verify(&self, contributor_id: &str) -> Result<u64, String> {
        let reward = self
            .rewards
            .iter()
            .find(|r| r.contributor_id == contributor_id)
            .ok_or_else(|| format!("{contributor_id} is not in the ledger of {}", self.epoch))?;
        let decode = |h: &str| -> Result<merkle::Hash, String> {
            hex::decode(h)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(|| format!("{h:?} is not a 32-byte hex hash"))
        };
        let root = decode(&self.merkle_root)?;
        let proof = reward
            .proof
            .iter()
            .map(|h| decode(h))
            .collect::<Result<Vec<_>, _>>()?;
        let leaf = merkle::leaf(&self.epoch, contributor_id, reward.amount);
        if merkle::verify(leaf, &proof, &root) {
            Ok(reward.amount)
        } else {
            Err(format!(
                "the proof for {contributor_id} ({} units) does not lead to the root {}",
                reward.amount, self.merkle_root
            ))
        }
    }
}

/// The ledger's file name for an epoch id (an interval's `/` and `:` made
/// file-safe).
pub fn file_name(epoch: &str) -> String {
    format!("{}.ledger.json", epoch.replace(['/', ':'], "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reward_verifies_and_a_tampered_one_does_not() {
        let amounts = (0..7).map(|i| (format!("c{i}"), 100 + i));
        let mut ledger = Ledger::new("2026-W47", 1000, amounts, Default::default(), "t".into());
        for r in ledger.rewards.clone() {
            assert_eq!(ledger.verify(&r.contributor_id).unwrap(), r.amount);
        }
        ledger.rewards[3].amount += 1;
        assert!(ledger.verify("c3").unwrap_err().contains("does not lead"));
        assert!(ledger.verify("nobody").is_err());
        assert_eq!(
            file_name("2026-11-24T00:00:00Z/2026-11-25T00:00:00Z"),
            "2026-11-24T00_00_00Z_2026-11-25T00_00_00Z.ledger.json"
        );
    }
}
