//! Proposer selection, weighted by stake and stateless.
//!
//! The proposer of `(height, round)` is a pure function of the height's validator set and the
//! *slot* `height + round`. Lay the validators (sorted by account) on the line `[0, total)`, each
//! owning an interval as long as its power; slot `s` picks the owner of `(s × c) mod total`,
//! where `c` is the integer nearest `total / φ` that is coprime with `total`. Multiplying by a unit
//! permutes `Z_total`, so every window of `total` consecutive slots gives each validator exactly
//! as many turns as it has power; the golden-ratio stride (a Weyl sequence) spreads those turns
//! out, so a validator with a quarter of the stake proposes about every fourth slot rather than a
//! quarter of the slots in one run. Being stateless, it needs no history to agree on after a
//! restart, a sync, or a change of the set.

use crate::types::{Height, Round};
use crate::validators::{ValidatorInfo, ValidatorSet};

/// `2^64 / φ`, the golden-ratio fraction in 64-bit fixed point.
const GOLDEN_FRACTION: u128 = 0x9E37_79B9_7F4A_7C15;

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The stride for a total power: the smallest integer at or above `total / φ` coprime with it.
pub fn stride(total: u64) -> u64 {
    let total = u128::from(total);
    let mut c = (total * GOLDEN_FRACTION) >> 64;
    // Integers coprime with `total` are dense (fewer than a few hundred in a row can share a
    // factor with a u64), so this ends quickly; it ends for sure at `total - 1` or `1`.
    while gcd(c, total) != 1 {
        c += 1;
    }
    u64::try_from(c).expect("the stride is below the total power")
}

/// The proposer of `(height, round)` given the set's [`stride`]; `None` when the set has no power.
pub fn proposer_with_stride(
    validators: &ValidatorSet,
    stride: u64,
    height: Height,
    round: Round,
) -> Option<&ValidatorInfo> {
    let total = u128::from(validators.total_power());
    if total == 0 {
        return None;
    }
    let slot = (u128::from(height.0) + u128::from(round.0)) % total;
    let point = slot * u128::from(stride) % total;
    let mut end = 0u128;
    validators.validators().iter().find(|v| {
        end += u128::from(v.power);
        point < end
    })
}

/// The proposer of `(height, round)`; `None` when the set has no power.
pub fn proposer(validators: &ValidatorSet, height: Height, round: Round) -> Option<&ValidatorInfo> {
    proposer_with_stride(validators, stride(validators.total_power()), height, round)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::validator_set;
    use crate::types::AccountId;

    fn set(powers: &[u64]) -> ValidatorSet {
        validator_set(powers.iter().enumerate().map(|(i, p)| (AccountId([i as u8 + 1; 32]), *p)))
    }

    #[test]
    fn turns_are_exactly_proportional_to_power_per_window() {
        let vs = set(&[5, 1, 3, 11, 7]);
        let total = vs.total_power();
        for start in [0u64, 1, 1000, u64::MAX / 2] {
            let mut turns = std::collections::BTreeMap::new();
            for s in 0..total {
                let p = proposer(&vs, Height(start.wrapping_add(s)), Round(0)).unwrap();
                *turns.entry(p.account).or_insert(0u64) += 1;
            }
            for v in vs.validators() {
                assert_eq!(turns[&v.account], v.power, "window starting at {start}");
            }
        }
    }

    #[test]
    fn turns_are_spread_out() {
        // A validator with a quarter of the power never waits more than a few slots.
        let vs = set(&[25, 25, 25, 25]);
        for v in vs.validators() {
            let slots: Vec<u64> = (0..400)
                .filter(|s| proposer(&vs, Height(*s), Round(0)).unwrap().account == v.account)
                .collect();
            let gap = slots.windows(2).map(|w| w[1] - w[0]).max().unwrap();
            assert!(gap <= 8, "gap {gap}");
        }
    }

    #[test]
    fn stride_is_coprime() {
        for total in [1u64, 2, 3, 4, 6, 100, 1 << 40, u64::MAX] {
            let c = stride(total);
            assert_eq!(gcd(c.into(), total.into()), 1, "total {total}");
        }
        assert!(proposer(&set(&[0, 0]), Height(1), Round(0)).is_none());
    }
}
