//! The values, messages and timeouts the engine exchanges with its driver.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::crypto::{Domain, Keypair, Signature, SignatureError, Verifier};
use crate::encoding::encode;
use crate::types::{AccountId, Hash, Height, Round};
use crate::vote::SignedVote;

/// What the validators agree on: the application's block.
///
/// The engine needs a value's id (the block hash that votes name) and a stateless check that
/// the value's body is the one its id commits to; the application decides whether a value is
/// valid on its state ([`super::Action::ValidateBlock`]). Values are serializable because
/// proposals carry them and the write-ahead log stores them.
pub trait Value: Clone + fmt::Debug + Serialize + DeserializeOwned {
    /// The value's hash: what proposals, votes and commit certificates name. It may cover only
    /// part of the value (a block's id is its header's hash).
    fn id(&self) -> Hash;

    /// Checks that the parts of the value its id does not hash directly are the ones it commits
    /// to (a block's transactions and last commit, against its header). The engine refuses a
    /// value that fails, wherever it comes from, so one id always names one value.
    fn check_body(&self) -> Result<(), BodyMismatch>;
}

/// Why a value's body is not the one its id commits to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("block body does not match its header: {0}")]
pub struct BodyMismatch(pub String);

/// A proposal's content: a block for a height and round, with the round in which the proposer
/// saw a quorum of prevotes for it (Tendermint's `validRound`), if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Proposal {
    /// The height proposed for.
    pub height: Height,
    /// The round proposed in.
    pub round: Round,
    /// The proposed block's id.
    pub block: Hash,
    /// The round of the proposer's valid value, when it re-proposes one; always below `round`.
    pub valid_round: Option<Round>,
}

/// A proposal with its proposer's signature (domain [`Domain::Proposal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SignedProposal {
    /// The proposal.
    pub proposal: Proposal,
    /// The validator that proposes.
    pub proposer: AccountId,
    /// Its signature over the proposal's canonical bytes.
    pub signature: Signature,
}

impl SignedProposal {
    /// Signs a proposal.
    pub fn sign(key: &Keypair, chain_id: &str, proposal: Proposal) -> SignedProposal {
        let signature = key.sign(Domain::Proposal, chain_id, &encode(&proposal));
        SignedProposal { proposal, proposer: key.account(), signature }
    }

    /// Checks the signature with the acceptance rule.
    pub fn verify(&self, verifier: &Verifier, chain_id: &str) -> Result<(), SignatureError> {
        verifier.verify(
            Domain::Proposal,
            chain_id,
            &self.proposer,
            &encode(&self.proposal),
            &self.signature,
        )
    }
}

/// A consensus message between validators (the `consensus` gossip topic's payload).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message<V> {
    /// A signed proposal and the block it names.
    Proposal {
        /// The signed proposal.
        proposal: SignedProposal,
        /// The proposed block; its id must equal `proposal.proposal.block`.
        block: V,
    },
    /// A signed prevote or precommit.
    Vote(SignedVote),
}

impl<V: Value> Message<V> {
    /// The height the message is for.
    pub fn height(&self) -> Height {
        match self {
            Message::Proposal { proposal, .. } => proposal.proposal.height,
            Message::Vote(v) => v.vote.height,
        }
    }

    /// The round the message is for.
    pub fn round(&self) -> Round {
        match self {
            Message::Proposal { proposal, .. } => proposal.proposal.round,
            Message::Vote(v) => v.vote.round,
        }
    }

    /// The validator that signed it.
    pub fn signer(&self) -> AccountId {
        match self {
            Message::Proposal { proposal, .. } => proposal.proposer,
            Message::Vote(v) => v.validator,
        }
    }

    /// Checks the signature, that a proposal's block is the one it names, and that the block's
    /// body matches its id. Gossip validation calls this once per message before handing it to
    /// the engine, which checks the block again (cheaply) but trusts the signature.
    pub fn verify(&self, verifier: &Verifier, chain_id: &str) -> Result<(), MessageError> {
        match self {
            Message::Proposal { proposal, block } => {
                if block.id() != proposal.proposal.block {
                    return Err(MessageError::BlockMismatch {
                        named: proposal.proposal.block,
                        carried: block.id(),
                    });
                }
                block.check_body().map_err(MessageError::Body)?;
                proposal.verify(verifier, chain_id).map_err(MessageError::Signature)
            }
            Message::Vote(v) => v.verify(verifier, chain_id).map_err(MessageError::Signature),
        }
    }
}

/// Why a consensus message is refused by [`Message::verify`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The signature fails the acceptance rule.
    #[error("bad signature: {0}")]
    Signature(SignatureError),
    /// A proposal carries another block than the one it names.
    #[error("proposal names block {named} but carries block {carried}")]
    BlockMismatch {
        /// The id the proposal signs.
        named: Hash,
        /// The id of the carried block.
        carried: Hash,
    },
    /// A proposal's block carries another body than its header commits to.
    #[error(transparent)]
    Body(BodyMismatch),
}

/// The step of a round (Algorithm 1's `step_p`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Step {
    /// Waiting for the round's proposal.
    Propose,
    /// Prevoted; waiting for a quorum of prevotes.
    Prevote,
    /// Precommitted; waiting for a quorum of precommits.
    Precommit,
}

/// Which timer a [`Timeout`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TimeoutKind {
    /// No proposal came in time: prevote nil.
    Propose,
    /// Prevotes were split: precommit nil.
    Prevote,
    /// Precommits were split: go to the next round.
    Precommit,
    /// Re-send this round's own messages (and ask for a commit when peers are ahead); repeats
    /// while the round lasts, so lost messages cannot stall a round.
    Rebroadcast,
    /// The wait between a commit and the next height's first round (the block interval).
    Commit,
}

/// A timer the driver must fire back as [`super::Event::TimeoutFired`] after `duration_ms`.
///
/// Timers are never cancelled: the engine ignores one whose height, round or step has passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Timeout {
    /// The height it belongs to.
    pub height: Height,
    /// The round it belongs to.
    pub round: Round,
    /// Which timer.
    pub kind: TimeoutKind,
    /// How long after scheduling it fires, in milliseconds.
    pub duration_ms: u64,
}
