//! How far ahead the chain is, as far as more than a third of the power vouches for it.
//!
//! A validator signs messages for height `h` only once it has committed `h - 1`. One message for
//! a far height proves nothing (a Byzantine validator can sign any height), but validators
//! holding more than a third of the power include an honest one, so the highest height that
//! such a set of validators has signed messages for is one the chain really reached. The engine
//! uses this height to decide that it is behind (skip the block interval, ask peers for the
//! commit); the node's catch-up uses it the same way for followers that run no engine.

use std::collections::BTreeMap;

use crate::types::{AccountId, Height};
use crate::validators::ValidatorSet;

/// The highest height each validator has signed a message for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeightsShown {
    by_validator: BTreeMap<AccountId, Height>,
}

impl HeightsShown {
    /// Records that `validator` signed a message for `height` (the caller checked the signature
    /// and that the signer is in `set`; others are ignored by [`HeightsShown::vouched`]).
    pub fn note(&mut self, validator: AccountId, height: Height) {
        let shown = self.by_validator.entry(validator).or_insert(height);
        *shown = (*shown).max(height);
    }

    /// The highest height above `floor` that validators of `set` holding more than a third of
    /// its power have shown, or `floor` if none.
    pub fn vouched(&self, set: &ValidatorSet, floor: Height) -> Height {
        set.vouched_max(self.by_validator.iter().filter(|(_, h)| **h > floor).map(|(a, h)| (a, *h)))
            .unwrap_or(floor)
    }

    /// The highest height any one validator showed, vouched or not (the simulator's mutant that
    /// trusts it).
    #[cfg(feature = "sim")]
    pub fn highest(&self) -> Option<Height> {
        self.by_validator.values().copied().max()
    }

    /// Forgets validators outside `set` and heights at or below `floor`: their messages can no
    /// longer move [`HeightsShown::vouched`].
    pub fn forget(&mut self, set: &ValidatorSet, floor: Height) {
        self.by_validator.retain(|a, h| *h > floor && set.contains(a));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::validator_set;

    fn set(powers: &[u64]) -> ValidatorSet {
        validator_set(powers.iter().enumerate().map(|(i, p)| (AccountId([i as u8; 32]), *p)))
    }

    #[test]
    fn a_height_counts_once_more_than_a_third_of_the_power_shows_it() {
        let set = set(&[10, 10, 10, 10]);
        let mut shown = HeightsShown::default();
        shown.note(AccountId([0; 32]), Height(1 << 62));
        assert_eq!(shown.vouched(&set, Height(5)), Height(5), "a quarter vouches for nothing");
        shown.note(AccountId([1; 32]), Height(9));
        // 20 of 40 is more than a third: the lower of the two heights is vouched for.
        assert_eq!(shown.vouched(&set, Height(5)), Height(9));
        // A stranger's message counts for nothing.
        shown.note(AccountId([9; 32]), Height(1 << 60));
        assert_eq!(shown.vouched(&set, Height(5)), Height(9));
        shown.forget(&set, Height(9));
        assert_eq!(shown.vouched(&set, Height(9)), Height(9));
        assert_eq!(shown.by_validator.len(), 1, "only the far height of a member is kept");
    }
}
