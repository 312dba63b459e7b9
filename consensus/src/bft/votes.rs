//! Vote bookkeeping for one height: who voted what in each round, the power behind each value,
//! and equivocation detection.

use std::collections::BTreeMap;

use crate::types::{AccountId, Hash, Round};
use crate::vote::{SignedVote, VoteKind};

/// Most different votes kept per validator, round and kind: the first, and conflicting ones.
pub const VOTES_PER_VALIDATOR_MAX: usize = 8;

/// The votes of one kind in one round.
///
/// As in Algorithm 1, the power *for a value* counts every validator that sent a vote for it,
/// so an equivocating validator counts for each value it signed (at most
/// [`VOTES_PER_VALIDATOR_MAX`]); the power of *any* votes counts each validator once. Counting an
/// equivocator's vote for only one value would let it show different nodes different
/// quorums: a node could lock on a block whose proof of prevotes other nodes then refuse.
#[derive(Clone, Debug, Default)]
pub struct VoteSet {
    votes: BTreeMap<AccountId, Vec<SignedVote>>,
    power_by_block: BTreeMap<Option<Hash>, u64>,
    power_any: u64,
}

/// What adding a vote did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Added {
    /// A new vote, now counted.
    New,
    /// The same vote again: nothing changed.
    Duplicate,
    /// A different vote of a validator that already voted in this round and kind: both count,
    /// each for its own value, and the pair (the first vote, the new one) is evidence of
    /// equivocation.
    Conflict(Box<SignedVote>),
}

impl VoteSet {
    /// Adds a vote worth `power`.
    pub fn add(&mut self, vote: SignedVote, power: u64) -> Added {
        let kept = self.votes.entry(vote.validator).or_default();
        if kept.iter().any(|v| v.vote == vote.vote) {
            return Added::Duplicate;
        }
        let first = kept.first().copied();
        if kept.len() >= VOTES_PER_VALIDATOR_MAX {
            return Added::Conflict(Box::new(first.expect("the set is not empty")));
        }
        kept.push(vote);
        let slot = self.power_by_block.entry(vote.vote.block).or_insert(0);
        *slot = slot.saturating_add(power);
        match first {
            Some(first) => Added::Conflict(Box::new(first)),
            None => {
                self.power_any = self.power_any.saturating_add(power);
                Added::New
            }
        }
    }

    /// The first vote of a validator, if it voted.
    pub fn first(&self, validator: &AccountId) -> Option<&SignedVote> {
        self.votes.get(validator).and_then(|v| v.first())
    }

    /// The power of the votes for `block` (`None`: nil).
    pub fn power_for(&self, block: Option<Hash>) -> u64 {
        self.power_by_block.get(&block).copied().unwrap_or(0)
    }

    /// The power of all votes, whatever their value.
    pub fn power_any(&self) -> u64 {
        self.power_any
    }

    /// The votes for `block`.
    pub fn votes_for(&self, block: Option<Hash>) -> impl Iterator<Item = &SignedVote> {
        self.votes.values().flatten().filter(move |v| v.vote.block == block)
    }

    /// Every vote held, by validator.
    pub fn all(&self) -> impl Iterator<Item = &SignedVote> {
        self.votes.values().flatten()
    }

    /// How many votes are held (an equivocator's count each).
    pub fn len(&self) -> usize {
        self.votes.values().map(Vec::len).sum()
    }

    /// Whether no vote is held.
    pub fn is_empty(&self) -> bool {
        self.votes.is_empty()
    }
}

/// The prevotes and precommits of one round.
#[derive(Clone, Debug, Default)]
pub struct RoundVotes {
    /// Prevotes.
    pub prevotes: VoteSet,
    /// Precommits.
    pub precommits: VoteSet,
}

impl RoundVotes {
    /// The set of one kind.
    pub fn of(&self, kind: VoteKind) -> &VoteSet {
        match kind {
            VoteKind::Prevote => &self.prevotes,
            VoteKind::Precommit => &self.precommits,
        }
    }

    /// The set of one kind, mutably.
    pub fn of_mut(&mut self, kind: VoteKind) -> &mut VoteSet {
        match kind {
            VoteKind::Prevote => &mut self.prevotes,
            VoteKind::Precommit => &mut self.precommits,
        }
    }
}

/// The votes of one height, by round.
#[derive(Clone, Debug, Default)]
pub struct HeightVotes {
    rounds: BTreeMap<Round, RoundVotes>,
}

impl HeightVotes {
    /// Adds a vote worth `power` (the caller checked its height and signer).
    pub fn add(&mut self, vote: SignedVote, power: u64) -> Added {
        self.rounds.entry(vote.vote.round).or_default().of_mut(vote.vote.kind).add(vote, power)
    }

    /// The first vote of `kind` a validator cast in `round`, if any arrived.
    pub fn first(
        &self,
        round: Round,
        kind: VoteKind,
        validator: &AccountId,
    ) -> Option<&SignedVote> {
        self.rounds.get(&round).and_then(|r| r.of(kind).first(validator))
    }

    /// The votes of a round, if any arrived.
    pub fn round(&self, round: Round) -> Option<&RoundVotes> {
        self.rounds.get(&round)
    }

    /// The rounds with votes, in order.
    pub fn rounds(&self) -> impl Iterator<Item = Round> + '_ {
        self.rounds.keys().copied()
    }

    /// How many votes are held, of every round and kind.
    pub fn len(&self) -> usize {
        self.rounds.values().map(|r| r.prevotes.len() + r.precommits.len()).sum()
    }

    /// Whether no vote is held.
    pub fn is_empty(&self) -> bool {
        self.rounds.is_empty()
    }

    /// The power of the votes of `kind` for `block` in `round`.
    pub fn power_for(&self, round: Round, kind: VoteKind, block: Option<Hash>) -> u64 {
        self.round(round).map_or(0, |r| r.of(kind).power_for(block))
    }

    /// The power of all votes of `kind` in `round`.
    pub fn power_any(&self, round: Round, kind: VoteKind) -> u64 {
        self.round(round).map_or(0, |r| r.of(kind).power_any())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keypair;
    use crate::types::Height;
    use crate::vote::Vote;

    #[test]
    fn counts_once_and_reports_conflicts() {
        let k = Keypair::from_seed([3; 32]);
        let vote = |block| {
            SignedVote::sign(
                &k,
                "c",
                Vote { height: Height(1), round: Round(0), kind: VoteKind::Prevote, block },
            )
        };
        let mut hv = HeightVotes::default();
        let a = vote(Some(Hash([1; 32])));
        assert_eq!(hv.add(a, 7), Added::New);
        assert_eq!(hv.add(a, 7), Added::Duplicate);
        assert_eq!(hv.add(vote(None), 7), Added::Conflict(Box::new(a)));
        assert_eq!(hv.power_for(Round(0), VoteKind::Prevote, Some(Hash([1; 32]))), 7);
        assert_eq!(hv.power_for(Round(0), VoteKind::Prevote, None), 7);
        assert_eq!(hv.power_any(Round(0), VoteKind::Prevote), 7);
        assert_eq!(hv.power_any(Round(0), VoteKind::Precommit), 0);
    }
}
