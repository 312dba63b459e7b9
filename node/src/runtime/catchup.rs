//! Catching up: which consensus messages matter, and how far behind the node is, as far as
//! evidence it can weigh shows. A plain state machine the driver consults, tested below.
//!
//! Nothing one peer says moves the node: a consensus message counts only from a validator of the
//! height, a far height only once validators holding more than a third of the power have shown it
//! ([`HeightsShown`]), and a committed block ahead of the ledger only when its certificate is
//! signed by more than a third of the known validator set's power (one of them honest, so the
//! height was really committed). A peer that signs messages for height 2^63, or a certificate
//! with its own key, changes no timer and triggers no sync.

use consensus::bft::HeightsShown;
use consensus::types::{AccountId, Height};
use consensus::validators::{ValidatorSet, is_one_third};
use consensus::vote::CommitCertificate;

use crate::network::Validation;

/// The node's view of how far the chain is ahead of its ledger.
#[derive(Clone, Debug, Default)]
pub struct CatchUp {
    shown: HeightsShown,
    certified: Height,
}

impl CatchUp {
    /// The gossip verdict on a consensus message of `height` signed by `signer` (its signature
    /// already checked), with the ledger's next height `next`, whose validators are `set`.
    ///
    /// A message from outside the set is `Reject`: only a faulty peer signs consensus messages
    /// without being a validator. One for a finished height is `Ignore`. One for the next two
    /// heights is `Accept` (relayed: the height after next is where validators that decided
    /// already are). Anything further cannot be checked yet and is `Ignore`: it is counted
    /// towards [`CatchUp::target`], but not relayed.
    pub fn admit(
        &mut self,
        signer: AccountId,
        height: Height,
        next: Height,
        set: &ValidatorSet,
    ) -> Validation {
        if height < next {
            return Validation::Ignore;
        }
        if !set.contains(&signer) {
            return Validation::Reject;
        }
        self.shown.note(signer, height);
        if height > next.next() { Validation::Ignore } else { Validation::Accept }
    }

    /// A committed block from gossip, beyond the ledger's next height (which the ledger checks
    /// in full): its certificate's signatures were checked, so if signers of `set` holding more
    /// than a third of its power signed it, its height is committed.
    pub fn certificate(&mut self, certificate: &CommitCertificate, set: &ValidatorSet) {
        let power = certificate
            .signatures
            .iter()
            .filter_map(|s| set.power_of(&s.validator))
            .fold(0u64, u64::saturating_add);
        if is_one_third(power, set.total_power()) {
            self.certified = self.certified.max(certificate.height);
        }
    }

    /// The engine vouches that `height` is committed (it asked for that height's commit).
    pub fn committed(&mut self, height: Height) {
        self.certified = self.certified.max(height);
    }

    /// The highest height known to be committed, given the ledger's height and the validators
    /// of the next one: a certified height, or one below a height more than a third of the power
    /// has shown.
    pub fn target(&self, ledger: Height, set: &ValidatorSet) -> Height {
        let shown = self.shown.vouched(set, ledger.next());
        let below_shown = Height(shown.0.saturating_sub(1));
        self.certified.max(below_shown).max(ledger)
    }

    /// Forgets what no longer matters once the ledger reached `ledger`.
    pub fn advance(&mut self, ledger: Height, set: &ValidatorSet) {
        self.shown.forget(set, ledger.next());
    }
}

#[cfg(test)]
mod tests {
    use consensus::crypto::Keypair;
    use consensus::types::{Hash, Round};
    use consensus::validators::ValidatorInfo;
    use consensus::vote::{SignedVote, Vote, VoteKind};

    use super::*;

    fn keys() -> Vec<Keypair> {
        (1..=4u8).map(|i| Keypair::from_seed([i; 32])).collect()
    }

    fn set(keys: &[Keypair]) -> ValidatorSet {
        ValidatorSet::new(
            keys.iter()
                .map(|k| ValidatorInfo { account: k.account(), power: 10, name: String::new() })
                .collect(),
        )
    }

    /// Finding 5 of the consensus review: the driver accepted (and so relayed) future-height
    /// messages from any key, and one of them set the sync target to about `u64::MAX`.
    #[test]
    fn far_future_messages_from_strangers_are_refused_and_move_nothing() {
        let keys = keys();
        let set = set(&keys);
        let mut c = CatchUp::default();
        let stranger = Keypair::from_seed([99; 32]).account();
        let next = Height(5);
        assert_eq!(c.admit(stranger, Height(u64::MAX), next, &set), Validation::Reject);
        assert_eq!(c.admit(stranger, Height(6), next, &set), Validation::Reject);
        assert_eq!(c.target(Height(4), &set), Height(4));
        // A validator's far-future message is counted, not relayed, and alone moves nothing.
        assert_eq!(c.admit(keys[0].account(), Height(1 << 62), next, &set), Validation::Ignore);
        assert_eq!(c.target(Height(4), &set), Height(4));
        // The next two heights are relayed; old ones are not.
        assert_eq!(c.admit(keys[1].account(), Height(5), next, &set), Validation::Accept);
        assert_eq!(c.admit(keys[1].account(), Height(6), next, &set), Validation::Accept);
        assert_eq!(c.admit(keys[1].account(), Height(4), next, &set), Validation::Ignore);
        // Two of four validators at height 6 or beyond: height 5 is committed.
        assert_eq!(c.target(Height(4), &set), Height(5));
    }

    fn certificate(signers: &[Keypair], height: u64) -> CommitCertificate {
        let vote = Vote {
            height: Height(height),
            round: Round(0),
            kind: VoteKind::Precommit,
            block: Some(Hash([7; 32])),
        };
        let votes: Vec<SignedVote> =
            signers.iter().map(|k| SignedVote::sign(k, "c", vote)).collect();
        CommitCertificate::from_precommits(&votes).unwrap()
    }

    #[test]
    fn a_certificate_ahead_counts_only_with_more_than_a_third_of_the_power() {
        let keys = keys();
        let set = set(&keys);
        let mut c = CatchUp::default();
        let stranger = Keypair::from_seed([99; 32]);
        c.certificate(&certificate(std::slice::from_ref(&stranger), 1 << 62), &set);
        c.certificate(&certificate(&keys[..1], 1 << 61), &set);
        assert_eq!(c.target(Height(3), &set), Height(3), "a stranger or a quarter proves nothing");
        c.certificate(&certificate(&keys[..2], 9), &set);
        assert_eq!(c.target(Height(3), &set), Height(9));
        c.committed(Height(12));
        assert_eq!(c.target(Height(3), &set), Height(12));
    }
}
