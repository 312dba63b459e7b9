//! Validator sets: who votes at a height, with what power, and the quorum rule.

use serde::{Deserialize, Serialize};

use crate::encoding::encode;
use crate::hash::{tagged_hash, tags};
use crate::types::{AccountId, Hash};

/// Most validators a set may hold.
pub const VALIDATORS_MAX: usize = 256;

/// One validator of a set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorInfo {
    /// Its account (public key).
    pub account: AccountId,
    /// Its voting power: its stake, after any slashing.
    pub power: u64,
    /// A human-readable name.
    pub name: String,
}

/// The validators that sign one height, sorted by account id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorSet {
    validators: Vec<ValidatorInfo>,
}

/// `3 × power > 2 × total`, in u128: strictly more than two thirds.
pub fn is_quorum(power: u64, total: u64) -> bool {
    3 * u128::from(power) > 2 * u128::from(total)
}

/// `2 × power > total`, in u128: strictly more than half.
pub fn is_majority(power: u64, total: u64) -> bool {
    2 * u128::from(power) > u128::from(total)
}

/// `3 × power > total`, in u128: more than one third (enough to contain an honest validator).
pub fn is_one_third(power: u64, total: u64) -> bool {
    3 * u128::from(power) > u128::from(total)
}

impl ValidatorSet {
    /// A set from validators in any order; duplicates keep the first occurrence.
    pub fn new(mut validators: Vec<ValidatorInfo>) -> ValidatorSet {
        validators.sort_by_key(|v| v.account);
        validators.dedup_by(|b, a| a.account == b.account);
        ValidatorSet { validators }
    }

    /// The validators, sorted by account id.
    pub fn validators(&self) -> &[ValidatorInfo] {
        &self.validators
    }

    /// How many validators.
    pub fn len(&self) -> usize {
        self.validators.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.validators.is_empty()
    }

    /// The total voting power (summed in u128, saturated to u64; genesis bounds it far below).
    pub fn total_power(&self) -> u64 {
        let sum: u128 = self.validators.iter().map(|v| u128::from(v.power)).sum();
        u64::try_from(sum).unwrap_or(u64::MAX)
    }

    /// A validator's power, or `None` if it is not in the set.
    pub fn power_of(&self, account: &AccountId) -> Option<u64> {
        self.get(account).map(|v| v.power)
    }

    /// A validator by account.
    pub fn get(&self, account: &AccountId) -> Option<&ValidatorInfo> {
        self.validators
            .binary_search_by(|v| v.account.cmp(account))
            .ok()
            .map(|i| &self.validators[i])
    }

    /// Whether `account` is in the set.
    pub fn contains(&self, account: &AccountId) -> bool {
        self.get(account).is_some()
    }

    /// The highest value that validators holding more than a third of the power have each shown
    /// at least (so at least one honest validator has), among `shown` (one value per account;
    /// accounts outside the set count nothing); `None` when they together hold a third or less.
    pub fn vouched_max<'a, T: Ord + Copy + 'a>(
        &self,
        shown: impl IntoIterator<Item = (&'a AccountId, T)>,
    ) -> Option<T> {
        let mut shown: Vec<(T, u64)> =
            shown.into_iter().filter_map(|(a, v)| Some((v, self.power_of(a)?))).collect();
        shown.sort_unstable_by_key(|(value, _)| std::cmp::Reverse(*value));
        let total = self.total_power();
        let mut power = 0u64;
        shown.into_iter().find_map(|(value, p)| {
            power = power.saturating_add(p);
            is_one_third(power, total).then_some(value)
        })
    }

    /// The set's hash, carried in every block header.
    pub fn hash(&self) -> Hash {
        tagged_hash(tags::VALIDATORS, &[&encode(self)])
    }
}
