//! Signed votes and commit certificates.
//!
//! A vote is a prevote or a precommit for a block hash (or for nothing, "nil") at a height and
//! round. Two votes of one validator for the same height, round and kind but different blocks are
//! an equivocation: the ledger slashes with them ([`crate::tx::TxKind::Evidence`]). A commit
//! certificate is a quorum of precommits for one block, checked against the validator set of its
//! height, which is how a node that missed the votes, or syncs old blocks, knows a block is final.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::crypto::{BatchItem, Domain, Keypair, Signature, SignatureError, Verifier};
use crate::encoding::encode;
use crate::hash::{tagged_hash, tags};
use crate::types::{AccountId, Hash, Height, Round};
use crate::validators::{ValidatorSet, is_quorum};

/// The two kinds of vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteKind {
    /// First-stage vote.
    Prevote,
    /// Second-stage vote; a quorum of precommits commits a block.
    Precommit,
}

impl VoteKind {
    /// The signing domain of this kind.
    pub fn domain(self) -> Domain {
        match self {
            VoteKind::Prevote => Domain::Prevote,
            VoteKind::Precommit => Domain::Precommit,
        }
    }
}

/// A vote's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Vote {
    /// The height voted on.
    pub height: Height,
    /// The round voted in.
    pub round: Round,
    /// Prevote or precommit.
    pub kind: VoteKind,
    /// The block voted for, or `None` for nil.
    pub block: Option<Hash>,
}

/// A vote with its validator's signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignedVote {
    /// The vote.
    pub vote: Vote,
    /// The validator that cast it.
    pub validator: AccountId,
    /// Its signature over the vote's canonical bytes, in the vote kind's domain.
    pub signature: Signature,
}

impl SignedVote {
    /// Signs a vote.
    pub fn sign(key: &Keypair, chain_id: &str, vote: Vote) -> SignedVote {
        let signature = key.sign(vote.kind.domain(), chain_id, &encode(&vote));
        SignedVote { vote, validator: key.account(), signature }
    }

    /// Checks the signature with the acceptance rule.
    pub fn verify(&self, verifier: &Verifier, chain_id: &str) -> Result<(), SignatureError> {
        verifier.verify(
            self.vote.kind.domain(),
            chain_id,
            &self.validator,
            &encode(&self.vote),
            &self.signature,
        )
    }

    /// Whether this vote and `other` are an equivocation: one validator, one height, round and
    /// kind, two different values.
    pub fn conflicts_with(&self, other: &SignedVote) -> bool {
        self.validator == other.validator
            && self.vote.height == other.vote.height
            && self.vote.round == other.vote.round
            && self.vote.kind == other.vote.kind
            && self.vote.block != other.vote.block
    }
}

/// One precommit signature in a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSignature {
    /// The validator.
    pub validator: AccountId,
    /// Its precommit signature for the certificate's height, round and block.
    pub signature: Signature,
}

/// A quorum of precommits for one block at one height and round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitCertificate {
    /// The committed height.
    pub height: Height,
    /// The round in which the quorum precommitted.
    pub round: Round,
    /// The committed block's hash.
    pub block: Hash,
    /// The precommits, sorted by validator, one each.
    pub signatures: Vec<CommitSignature>,
}

/// Why a commit certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// The certificate is for another height or block than expected.
    #[error(
        "certificate is for height {found_height} block {found_block}, expected height {height} block {block}"
    )]
    WrongBlock {
        /// Expected height.
        height: Height,
        /// Expected block.
        block: Hash,
        /// Certificate's height.
        found_height: Height,
        /// Certificate's block.
        found_block: Hash,
    },
    /// A signer is not in the validator set.
    #[error("certificate signer {validator} is not a validator at this height")]
    UnknownValidator {
        /// The signer.
        validator: AccountId,
    },
    /// Signers are not sorted or one signs twice.
    #[error("certificate signers must be sorted and distinct")]
    UnsortedOrDuplicate,
    /// A signature fails the acceptance rule.
    #[error("certificate signature by {validator} is invalid: {source}")]
    BadSignature {
        /// The signer.
        validator: AccountId,
        /// Why.
        source: SignatureError,
    },
    /// The signers hold two thirds of the power or less.
    #[error("certificate has power {power} of {total}: not more than two thirds")]
    NoQuorum {
        /// Power of the signers.
        power: u64,
        /// Total power of the set.
        total: u64,
    },
}

impl CommitCertificate {
    /// Builds a certificate from precommits for one block (the caller gathered a quorum).
    pub fn from_precommits<'a>(
        votes: impl IntoIterator<Item = &'a SignedVote>,
    ) -> Option<CommitCertificate> {
        let mut votes = votes.into_iter().peekable();
        let first = *votes.peek()?;
        let block = first.vote.block?;
        let mut seen = BTreeSet::new();
        let mut signatures: Vec<CommitSignature> = votes
            .filter(|v| {
                v.vote.kind == VoteKind::Precommit
                    && v.vote.block == Some(block)
                    && v.vote.height == first.vote.height
                    && v.vote.round == first.vote.round
            })
            .filter(|v| seen.insert(v.validator))
            .map(|v| CommitSignature { validator: v.validator, signature: v.signature })
            .collect();
        signatures.sort_by_key(|s| s.validator);
        Some(CommitCertificate {
            height: first.vote.height,
            round: first.vote.round,
            block,
            signatures,
        })
    }

    /// The precommit vote every signature in the certificate signs.
    pub fn vote(&self) -> Vote {
        Vote {
            height: self.height,
            round: self.round,
            kind: VoteKind::Precommit,
            block: Some(self.block),
        }
    }

    /// The certificate's hash, carried as the next block header's `last_commit_hash`.
    pub fn hash(&self) -> Hash {
        tagged_hash(tags::COMMIT, &[&encode(self)])
    }

    /// Checks that this certificate commits `block` at `height`: signers sorted, distinct and in
    /// `validators`, every signature valid, and their power a quorum.
    pub fn verify(
        &self,
        verifier: &Verifier,
        chain_id: &str,
        height: Height,
        block: &Hash,
        validators: &ValidatorSet,
    ) -> Result<(), CertificateError> {
        if self.height != height || self.block != *block {
            return Err(CertificateError::WrongBlock {
                height,
                block: *block,
                found_height: self.height,
                found_block: self.block,
            });
        }
        let mut power = 0u64;
        for pair in self.signatures.windows(2) {
            if pair[0].validator >= pair[1].validator {
                return Err(CertificateError::UnsortedOrDuplicate);
            }
        }
        for sig in &self.signatures {
            let p = validators
                .power_of(&sig.validator)
                .ok_or(CertificateError::UnknownValidator { validator: sig.validator })?;
            power = power.saturating_add(p);
        }
        let total = validators.total_power();
        if !is_quorum(power, total) {
            return Err(CertificateError::NoQuorum { power, total });
        }
        let message = encode(&self.vote());
        let items: Vec<BatchItem<'_>> = self
            .signatures
            .iter()
            .map(|s| BatchItem {
                domain: Domain::Precommit,
                signer: &s.validator,
                message: &message,
                signature: &s.signature,
            })
            .collect();
        verifier.verify_batch(chain_id, &items).map_err(|(i, source)| {
            CertificateError::BadSignature { validator: self.signatures[i].validator, source }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::validator_set;

    fn keys() -> Vec<Keypair> {
        (1..=4).map(|i| Keypair::from_seed([i; 32])).collect()
    }

    fn set(keys: &[Keypair], powers: &[u64]) -> ValidatorSet {
        validator_set(keys.iter().map(Keypair::account).zip(powers.iter().copied()))
    }

    fn precommit(k: &Keypair, block: Hash) -> SignedVote {
        let vote = Vote {
            height: Height(5),
            round: Round(1),
            kind: VoteKind::Precommit,
            block: Some(block),
        };
        SignedVote::sign(k, "c", vote)
    }

    #[test]
    fn quorum_is_strictly_more_than_two_thirds() {
        assert!(!is_quorum(2, 3));
        assert!(is_quorum(3, 4));
        assert!(!is_quorum(66, 99));
        assert!(is_quorum(67, 100));
        assert!(!is_quorum(u64::MAX / 3 * 2, u64::MAX / 3 * 3));
    }

    #[test]
    fn certificate_verifies_and_counts_power() {
        let ks = keys();
        let vs = set(&ks, &[10, 10, 10, 70]);
        let block = Hash([7; 32]);
        let votes: Vec<SignedVote> = ks.iter().map(|k| precommit(k, block)).collect();
        let full = CommitCertificate::from_precommits(&votes).unwrap();
        let v = &Verifier::new();
        full.verify(v, "c", Height(5), &block, &vs).unwrap();
        // Three small validators hold 30 of 100: no quorum.
        let small: Vec<SignedVote> =
            votes.iter().copied().filter(|v| vs.power_of(&v.validator) == Some(10)).collect();
        let cert = CommitCertificate::from_precommits(&small).unwrap();
        assert!(matches!(
            cert.verify(v, "c", Height(5), &block, &vs),
            Err(CertificateError::NoQuorum { .. })
        ));
        assert!(matches!(
            full.verify(v, "c", Height(6), &block, &vs),
            Err(CertificateError::WrongBlock { .. })
        ));
        assert!(matches!(
            full.verify(v, "other-chain", Height(5), &block, &vs),
            Err(CertificateError::BadSignature { .. })
        ));
        let mut dup = full.clone();
        dup.signatures.push(dup.signatures[0]);
        assert_eq!(
            dup.verify(v, "c", Height(5), &block, &vs),
            Err(CertificateError::UnsortedOrDuplicate)
        );
    }

    #[test]
    fn equivocation_is_detected() {
        let k = &keys()[0];
        let a = precommit(k, Hash([1; 32]));
        let b = precommit(k, Hash([2; 32]));
        assert!(a.conflicts_with(&b));
        assert!(!a.conflicts_with(&a));
    }
}
