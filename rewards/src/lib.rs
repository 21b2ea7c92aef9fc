//! Reward epochs: each contributor's share of an epoch's budget for the
//! fresh, novel, honest coverage they added, in integers that sum to the
//! budget exactly, published as a ledger whose Merkle root lets anyone
//! check one amount.

pub mod allocate;
pub mod config;
pub mod epoch;
pub mod fraud;
pub mod job;
pub mod ledger;
pub mod merkle;
pub mod regions;
pub mod tables;

pub use config::{FraudConfig, RewardConfig};
pub use epoch::Epoch;
