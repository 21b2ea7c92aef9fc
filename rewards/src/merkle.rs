//! The ledger's Merkle tree, by the rule published in `rewards/README.md`,
//! so anyone can check a contributor's amount against the root alone.
//!
//! - leaf = sha256(0x00 ‖ epoch ‖ 0x00 ‖ contributor_id ‖ 0x00 ‖ amount as
//!   u64 big-endian), strings as UTF-8;
//! - parent = sha256(0x01 ‖ min(a, b) ‖ max(a, b)), comparing bytes;
//! - leaves in contributor_id order (bytes); an odd node at the end of a
//!   level is carried up unchanged;
//! - a proof is the sibling hashes from leaf to root (a carried-up node has
//!   none at that level); an empty ledger's root is 32 zero bytes.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

pub fn leaf(epoch: &str, contributor_id: &str, amount: u64) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(epoch.as_bytes());
    h.update([0x00]);
    h.update(contributor_id.as_bytes());
    h.update([0x00]);
    h.update(amount.to_be_bytes());
    h.finalize().into()
}

pub fn parent(a: &Hash, b: &Hash) -> Hash {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(lo);
    h.update(hi);
    h.finalize().into()
}

/// Every level of the tree, leaves first.
#[derive(Debug, Clone)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// A tree over leaves already in contributor_id order.
    pub fn new(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let above = below
                .chunks(2)
                .map(|pair| match pair {
                    [a, b] => parent(a, b),
                    [odd] => *odd,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
            levels.push(above);
        }
        Self { levels }
    }

    pub fn root(&self) -> Hash {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or([0; 32])
    }

    /// The siblings from leaf `index` up to the root.
    pub fn proof(&self, mut index: usize) -> Vec<Hash> {
        let mut proof = Vec::new();
        for level in &self.levels[..self.levels.len().saturating_sub(1)] {
            let sibling = index ^ 1;
            if sibling < level.len() {
                proof.push(level[sibling]);
            }
            index /= 2;
        }
        proof
    }
}

/// Whether `proof` leads from `leaf` to `root`.
pub fn verify(leaf: Hash, proof: &[Hash], root: &Hash) -> bool {
    proof.iter().fold(leaf, |h, sibling| parent(&h, sibling)) == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_proof_verifies_and_a_changed_amount_does_not() {
        for n in 0..40usize {
            let leaves: Vec<Hash> = (0..n)
                .map(|i| leaf("2026-W47", &format!("c{i:03}"), i as u64 * 7))
                .collect();
            let tree = Tree::new(leaves.clone());
            let root = tree.root();
            if n == 0 {
                assert_eq!(root, [0; 32]);
            }
            for (i, l) in leaves.iter().enumerate() {
                let proof = tree.proof(i);
                assert!(verify(*l, &proof, &root), "n {n} leaf {i}");
                let forged = leaf("2026-W47", &format!("c{i:03}"), i as u64 * 7 + 1);
                assert!(!verify(forged, &proof, &root));
            }
        }
    }

    #[test]
    fn a_single_leaf_is_its_own_root() {
        let l = leaf("e", "c", 1);
        let tree = Tree::new(vec![l]);
        assert_eq!(tree.root(), l);
        assert!(tree.proof(0).is_empty());
    }
}
