//! Splitting an epoch's budget in integers: over cells by weight, within a
//! cell over contributors by weight, then a per-contributor cap whose excess
//! goes back to the others. Every division hands its remainder out by the
//! largest-remainder rule with fixed tie-breaks, so the amounts always sum
//! to the budget exactly and the same input always gives the same output.

use std::collections::BTreeMap;

/// One contributor's claim on a cell: quality-weighted frames after
/// diminishing returns, in any integer unit (milli-frames in practice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub contributor: String,
    pub weight: u64,
}

/// A covered cell, its weight (freshness × novelty × region, as an integer)
/// and who covered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellInput {
    pub cell: u64,
    pub weight: u64,
    pub claims: Vec<Claim>,
}

/// What one contributor's amount is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    pub amount: u64,
    /// (cell, the cell's amount, this contributor's part of it).
    pub cells: Vec<(u64, u64, u64)>,
    /// Before the cap: the sum of the cell parts.
    pub uncapped: u64,
    /// Taken away by the cap (0 when under it).
    pub capped_off: u64,
    /// Received from what others' caps freed.
    pub redistributed: u64,
}

/// The result of a split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    pub by_contributor: BTreeMap<String, Allocation>,
    /// Each cell's amount.
    pub by_cell: BTreeMap<u64, u64>,
    /// The cap applied: the configured one, raised to ceil(budget / n) when
    /// n contributors could not otherwise absorb the budget.
    pub cap: u64,
}

/// Splits `total` in proportion to `weights` (indexed as given), floors
/// first, then one unit each to the largest remainders; ties go to the
/// lower index. The parts sum to `total` when any weight is positive.
pub fn largest_remainder(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (i, &w) in weights.iter().enumerate() {
        let product = u128::from(total) * u128::from(w);
        parts.push((product / sum) as u64);
        remainders.push((product % sum, i));
    }
    let given: u64 = parts.iter().sum();
    let left = total - given;
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in remainders.iter().take(left as usize) {
        parts[i] += 1;
    }
    parts
}

/// The split of `budget` over `cells`, with no contributor above `cap`
/// (raised if it must be, see [`Split::cap`]).
pub fn split(budget: u64, cells: &[CellInput], cap: u64) -> Split {
    // A canonical order, so the caller's order never matters.
    let mut cells: Vec<CellInput> = cells
        .iter()
        .filter(|c| c.weight > 0 && c.claims.iter().any(|k| k.weight > 0))
        .cloned()
        .collect();
    cells.sort_by_key(|c| c.cell);
    for c in &mut cells {
        c.claims.retain(|k| k.weight > 0);
        c.claims.sort_by(|a, b| a.contributor.cmp(&b.contributor));
    }
    let mut out = Split::default();
    if cells.is_empty() {
        out.cap = cap;
        return out;
    }
    let cell_amounts =
        largest_remainder(budget, &cells.iter().map(|c| c.weight).collect::<Vec<_>>());
    for (c, &amount) in cells.iter().zip(&cell_amounts) {
        out.by_cell.insert(c.cell, amount);
        let parts = largest_remainder(
            amount,
            &c.claims.iter().map(|k| k.weight).collect::<Vec<_>>(),
        );
        for (k, &part) in c.claims.iter().zip(&parts) {
            let a = out.by_contributor.entry(k.contributor.clone()).or_default();
            a.cells.push((c.cell, amount, part));
            a.uncapped += part;
            a.amount += part;
        }
    }

    // The cap: what it frees goes to those under it, in proportion to what
    // they have, until nobody is over it.
    let n = out.by_contributor.len() as u64;
    let cap = cap.max(budget.div_ceil(n));
    out.cap = cap;
    loop {
        let mut freed = 0;
        for a in out.by_contributor.values_mut() {
            if a.amount > cap {
                freed += a.amount - cap;
                a.capped_off += a.amount - cap;
                a.amount = cap;
            }
        }
        if freed == 0 {
            break;
        }
        let under: Vec<&String> = out
            .by_contributor
            .iter()
            .filter(|(_, a)| a.amount < cap)
            .map(|(k, _)| k)
            .collect();
        let weights: Vec<u64> = under
            .iter()
            .map(|k| out.by_contributor[*k].amount.max(1))
            .collect();
        let gifts = largest_remainder(freed, &weights);
        let under: Vec<String> = under.into_iter().cloned().collect();
        for (k, gift) in under.iter().zip(gifts) {
            let a = out.by_contributor.get_mut(k).expect("listed above");
            a.amount += gift;
            a.redistributed += gift;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn claim(c: &str, w: u64) -> Claim {
        Claim {
            contributor: c.into(),
            weight: w,
        }
    }

    #[test]
    fn remainders_go_to_the_largest_fractions_then_the_lower_index() {
        assert_eq!(largest_remainder(10, &[1, 1, 1]), vec![4, 3, 3]);
        assert_eq!(largest_remainder(10, &[1, 2]), vec![3, 7]);
        assert_eq!(largest_remainder(7, &[0, 0]), vec![0, 0]);
        assert_eq!(largest_remainder(0, &[5, 5]), vec![0, 0]);
    }

    #[test]
    fn a_worked_example() {
        // Budget 1000 over two cells weighted 3:1; cell 1 shared 1:1.
        let cells = vec![
            CellInput {
                cell: 1,
                weight: 3,
                claims: vec![claim("alice", 10), claim("bob", 10)],
            },
            CellInput {
                cell: 2,
                weight: 1,
                claims: vec![claim("carol", 4)],
            },
        ];
        let s = split(1000, &cells, 1000);
        assert_eq!(s.by_cell[&1], 750);
        assert_eq!(s.by_contributor["alice"].amount, 375);
        assert_eq!(s.by_contributor["bob"].amount, 375);
        assert_eq!(s.by_contributor["carol"].amount, 250);
        // A cap of 300: alice and bob give 75 each back, all to carol.
        let s = split(1000, &cells, 300);
        assert_eq!(s.cap, 334, "three contributors must absorb 1000");
        let total: u64 = s.by_contributor.values().map(|a| a.amount).sum();
        assert_eq!(total, 1000);
        assert!(s.by_contributor.values().all(|a| a.amount <= 334));
    }

    #[test]
    fn the_readmes_worked_example() {
        let cells = vec![
            CellInput {
                cell: 0xa,
                weight: 4000,
                claims: vec![claim("alice", 10_000 + 5_000), claim("bob", 5_000)],
            },
            CellInput {
                cell: 0xb,
                weight: 4000,
                claims: vec![claim("carol", 10_000)],
            },
        ];
        let s = split(1000, &cells, 1000);
        let amounts: Vec<u64> = s.by_contributor.values().map(|a| a.amount).collect();
        assert_eq!(amounts, vec![375, 125, 500]);
        let s = split(1000, &cells, 400);
        let amounts: Vec<u64> = s.by_contributor.values().map(|a| a.amount).collect();
        assert_eq!(amounts, vec![400, 200, 400]);
        assert_eq!(s.by_contributor["bob"].redistributed, 75);
    }

    #[test]
    fn amounts_always_sum_to_the_budget_whatever_the_input() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(47);
        for _ in 0..2000 {
            let people: Vec<String> = (0..rng.random_range(1..30))
                .map(|i| format!("c{i}"))
                .collect();
            let cells: Vec<CellInput> = (0..rng.random_range(1..60))
                .map(|c| CellInput {
                    cell: c,
                    weight: rng.random_range(0..1_000_000),
                    claims: (0..rng.random_range(1..6))
                        .map(|_| {
                            claim(
                                &people[rng.random_range(0..people.len())],
                                rng.random_range(0..5000),
                            )
                        })
                        .collect(),
                })
                .collect();
            let budget = rng.random_range(0..u64::MAX / 4);
            let cap = rng.random_range(0..budget.max(1));
            let s = split(budget, &cells, cap);
            let total: u64 = s.by_contributor.values().map(|a| a.amount).sum();
            if s.by_contributor.is_empty() {
                assert_eq!(total, 0);
                continue;
            }
            assert_eq!(total, budget);
            assert!(s.by_contributor.values().all(|a| a.amount <= s.cap));
            // The caller's order does not matter.
            let mut reversed = cells.clone();
            reversed.reverse();
            assert_eq!(split(budget, &reversed, cap), s);
        }
    }
}
