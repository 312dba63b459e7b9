//! Gossip topics, message ids, and the stateless half of gossip validation.
//!
//! Topics are `/crucible/<chain_id>/txs/2` and `/crucible/<chain_id>/{consensus,blocks}/1` (the
//! number is the payload's version: a `txs` message is a batch since version 2). A message id is a domain-tagged
//! sha256 of the topic and the message bytes, so the same bytes relayed by many peers are one
//! message, and no two topics share an id.
//!
//! Every received message is checked in a fixed order: size, decode, signature, chain id (here,
//! [`check_stateless`]), then the state check (the application's, answered with
//! [`Validation`]). A stateless failure is a [`Validation::Reject`]: only a faulty or malicious
//! peer sends bytes that are oversized, malformed, badly signed or for another chain, so
//! gossipsub lowers the sender's score. A stateful failure (stale height, used nonce, duplicate)
//! is a [`Validation::Ignore`]: honest relays forward those too.

use std::fmt;

use consensus::bft::{Message as ConsensusMessage, SignedProposal};
use consensus::block::Block;
use consensus::crypto::{Domain, SignatureError, Verifier};
use consensus::encoding::{DecodeError, decode, encode, encoded_len};
use consensus::hash::tagged_hash;
use consensus::tx::{SignedTx, verify_txs};
use consensus::types::{Hash, Height};
use consensus::validators::VALIDATORS_MAX;
use consensus::vote::CommitCertificate;
use libp2p::gossipsub::{IdentTopic, MessageAcceptance, TopicHash};
use serde::{Deserialize, Serialize};

/// Domain tag of gossip message ids.
pub const MESSAGE_ID_TAG: &[u8] = b"crucible/gossip-id/v1";

/// The three gossip topics of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Batches of signed transactions (a `Vec` of [`SignedTx`], at most [`TXS_PER_MESSAGE_MAX`]).
    Txs,
    /// Proposals and votes between validators ([`ConsensusMessage<Block>`]).
    Consensus,
    /// Committed blocks with their certificates ([`CommittedBlock`]).
    Blocks,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 3] = [Topic::Txs, Topic::Consensus, Topic::Blocks];

    /// The topic's short name.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Txs => "txs",
            Topic::Consensus => "consensus",
            Topic::Blocks => "blocks",
        }
    }

    /// The version of the topic's payload.
    pub fn version(self) -> u32 {
        match self {
            Topic::Txs => 2,
            Topic::Consensus | Topic::Blocks => 1,
        }
    }

    /// The gossipsub topic of this chain: `/crucible/<chain_id>/<name>/<version>`.
    pub fn ident(self, chain_id: &str) -> IdentTopic {
        IdentTopic::new(format!("/crucible/{chain_id}/{}/{}", self.name(), self.version()))
    }

    /// Which of this chain's topics `hash` is, if any.
    pub fn from_hash(chain_id: &str, hash: &TopicHash) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.ident(chain_id).hash() == *hash)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A gossip message's id: `tagged_hash(MESSAGE_ID_TAG, [topic, data])`.
pub fn message_id(topic: &TopicHash, data: &[u8]) -> Hash {
    tagged_hash(MESSAGE_ID_TAG, &[topic.as_str().as_bytes(), data])
}

/// A committed block with the certificate that committed it: the `blocks` topic's payload, and
/// what `sync` returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommittedBlock {
    /// The block.
    pub block: Block,
    /// A quorum of precommits for it.
    pub commit: CommitCertificate,
}

impl CommittedBlock {
    /// The block's height.
    pub fn height(&self) -> Height {
        self.block.header.height
    }
}

/// Most transactions in one `txs` message (a batch is also bounded by the gossip byte limit).
pub const TXS_PER_MESSAGE_MAX: usize = 1_024;

/// A gossip message that passed the stateless checks.
#[derive(Clone, Debug, PartialEq)]
pub enum GossipMessage {
    /// Signed transactions, 1 to [`TXS_PER_MESSAGE_MAX`].
    Txs(Vec<SignedTx>),
    /// A proposal or vote.
    Consensus(Box<ConsensusMessage<Block>>),
    /// A committed block.
    Block(Box<CommittedBlock>),
}

impl GossipMessage {
    /// The topic the message travels on.
    pub fn topic(&self) -> Topic {
        match self {
            GossipMessage::Txs(_) => Topic::Txs,
            GossipMessage::Consensus(_) => Topic::Consensus,
            GossipMessage::Block(_) => Topic::Blocks,
        }
    }
}

/// The `consensus` topic's payload: a proposal or vote, with the sender's send number.
///
/// The engine sends its own messages again while a round lasts (its rebroadcast timer), for
/// peers that lost them. Gossipsub refuses to publish bytes it published before, and drops bytes
/// it has seen as duplicates, so each send carries a new `send` number, which makes its bytes
/// and message id new. The number means nothing else: receivers drop it, and relay a message
/// only if it is news to them (the driver's state check answers `Ignore` for a message it has
/// seen), so a replayed envelope goes no further than the peers that missed the message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsensusEnvelope {
    /// The sender's send counter.
    pub send: u64,
    /// The proposal or vote.
    pub message: ConsensusMessage<Block>,
}

/// The application's answer to a gossip message, which gossipsub acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    /// Valid: deliver and forward it.
    Accept,
    /// Invalid in itself: drop it and lower the sender's score.
    Reject,
    /// Not useful now (stale, duplicate, nonce used): drop it without penalty.
    Ignore,
}

impl From<Validation> for MessageAcceptance {
    fn from(v: Validation) -> MessageAcceptance {
        match v {
            Validation::Accept => MessageAcceptance::Accept,
            Validation::Reject => MessageAcceptance::Reject,
            Validation::Ignore => MessageAcceptance::Ignore,
        }
    }
}

/// Why a gossip message failed the stateless checks (always a [`Validation::Reject`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GossipError {
    /// Over the chain's gossip limit.
    #[error("message is {found} bytes, over the limit of {limit}")]
    Oversized {
        /// Its size.
        found: usize,
        /// The limit.
        limit: usize,
    },
    /// Not on one of this chain's topics.
    #[error("message on unknown topic {0}")]
    UnknownTopic(String),
    /// The bytes do not decode.
    #[error("malformed: {0}")]
    Malformed(#[from] DecodeError),
    /// A signature fails the acceptance rule.
    #[error("bad signature: {0}")]
    BadSignature(#[from] SignatureError),
    /// A proposal names another block than it carries, or a certificate another block.
    #[error("{0}")]
    Inconsistent(String),
    /// The message is for another chain.
    #[error("message is for chain {found:?}, this is {expected:?}")]
    WrongChain {
        /// This chain.
        expected: String,
        /// The message's chain.
        found: String,
    },
}

/// Size, decode, signature and chain id checks of one gossip message, in that order.
/// `gossip_bytes_max` is the chain's gossip limit, `max_tx_bytes` its largest transaction.
pub fn check_stateless(
    verifier: &Verifier,
    chain_id: &str,
    topic: Topic,
    data: &[u8],
    gossip_bytes_max: usize,
    max_tx_bytes: usize,
) -> Result<GossipMessage, GossipError> {
    if data.len() > gossip_bytes_max {
        return Err(GossipError::Oversized { found: data.len(), limit: gossip_bytes_max });
    }
    let wrong_chain =
        |found: &str| GossipError::WrongChain { expected: chain_id.into(), found: found.into() };
    match topic {
        Topic::Txs => {
            let txs: Vec<SignedTx> = decode("transaction batch", data, data.len())?;
            if txs.is_empty() || txs.len() > TXS_PER_MESSAGE_MAX {
                return Err(GossipError::Inconsistent(format!(
                    "a batch holds {} transactions; 1..={TXS_PER_MESSAGE_MAX} expected",
                    txs.len()
                )));
            }
            for tx in &txs {
                let found = encoded_len(tx);
                if found > max_tx_bytes {
                    return Err(GossipError::Oversized { found, limit: max_tx_bytes });
                }
            }
            // A tx of another chain is checked with its own chain id first, so it is named as
            // such rather than as a bad signature.
            if let Some(tx) = txs.iter().find(|tx| tx.tx.chain_id != chain_id) {
                tx.verify(verifier, &tx.tx.chain_id)?;
                return Err(wrong_chain(&tx.tx.chain_id));
            }
            verify_txs(verifier, chain_id, &txs).map_err(|(_, error)| error)?;
            Ok(GossipMessage::Txs(txs))
        }
        Topic::Consensus => {
            let envelope: ConsensusEnvelope = decode("consensus message", data, data.len())?;
            let message = envelope.message;
            match &message {
                ConsensusMessage::Proposal { proposal, block } => {
                    check_proposal(verifier, chain_id, proposal, block)?
                }
                // Votes carry no chain id: the signature covers ours, so a vote of another chain
                // fails here.
                ConsensusMessage::Vote(vote) => vote.verify(verifier, chain_id)?,
            }
            Ok(GossipMessage::Consensus(Box::new(message)))
        }
        Topic::Blocks => {
            let committed: CommittedBlock = decode("committed block", data, data.len())?;
            check_certificate_signatures(verifier, &committed.block.header.chain_id, &committed)?;
            if committed.block.header.chain_id != chain_id {
                return Err(wrong_chain(&committed.block.header.chain_id));
            }
            Ok(GossipMessage::Block(Box::new(committed)))
        }
    }
}

fn check_proposal(
    verifier: &Verifier,
    chain_id: &str,
    proposal: &SignedProposal,
    block: &Block,
) -> Result<(), GossipError> {
    if block.hash() != proposal.proposal.block {
        return Err(GossipError::Inconsistent(format!(
            "proposal names block {} but carries block {}",
            proposal.proposal.block,
            block.hash()
        )));
    }
    if block.header.height != proposal.proposal.height {
        return Err(GossipError::Inconsistent(format!(
            "proposal is for height {} but carries a block of height {}",
            proposal.proposal.height, block.header.height
        )));
    }
    // The body is checked at the door: a relay that swaps the body under an honest proposal's
    // signed header is refused (and scored down) here, before the copy could be marked seen.
    block.check_body().map_err(|e| GossipError::Inconsistent(e.to_string()))?;
    proposal.verify(verifier, chain_id)?;
    if block.header.chain_id != chain_id {
        return Err(GossipError::WrongChain {
            expected: chain_id.into(),
            found: block.header.chain_id.clone(),
        });
    }
    Ok(())
}

/// Every precommit signature of the certificate valid for its block, the certificate naming that
/// block, and the block's body the one its header commits to. Whether the signers are a quorum
/// of the height's validators is the state check.
fn check_certificate_signatures(
    verifier: &Verifier,
    chain_id: &str,
    committed: &CommittedBlock,
) -> Result<(), GossipError> {
    let cert = &committed.commit;
    if cert.block != committed.block.hash() || cert.height != committed.block.header.height {
        return Err(GossipError::Inconsistent(format!(
            "certificate commits height {} block {}, not the carried block",
            cert.height, cert.block
        )));
    }
    committed.block.check_body().map_err(|e| GossipError::Inconsistent(e.to_string()))?;
    if cert.signatures.is_empty() || cert.signatures.len() > VALIDATORS_MAX {
        return Err(GossipError::Inconsistent(format!(
            "certificate has {} signatures; 1..={VALIDATORS_MAX} expected",
            cert.signatures.len()
        )));
    }
    let message = encode(&cert.vote());
    for sig in &cert.signatures {
        verifier.verify(Domain::Precommit, chain_id, &sig.validator, &message, &sig.signature)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use consensus::crypto::Keypair;
    use consensus::tx::{Tx, TxKind};
    use consensus::types::{AccountId, Amount, Nonce};

    use super::*;

    fn tx(chain: &str) -> SignedTx {
        let key = Keypair::from_seed([3; 32]);
        let kind = TxKind::Transfer { to: AccountId([9; 32]), amount: Amount(5) };
        SignedTx::sign(&key, Tx { chain_id: chain.into(), nonce: Nonce(0), kind })
    }

    #[test]
    fn topics_and_ids_are_per_chain() {
        assert_eq!(Topic::Txs.ident("c1").hash().as_str(), "/crucible/c1/txs/2");
        assert_eq!(Topic::Blocks.ident("c1").hash().as_str(), "/crucible/c1/blocks/1");
        let hash = Topic::Blocks.ident("c1").hash();
        assert_eq!(Topic::from_hash("c1", &hash), Some(Topic::Blocks));
        assert_eq!(Topic::from_hash("c2", &hash), None);
        let other = Topic::Txs.ident("c1").hash();
        assert_ne!(message_id(&hash, b"x"), message_id(&other, b"x"));
    }

    fn batch(txs: &[SignedTx]) -> Vec<u8> {
        encode(txs)
    }

    #[test]
    fn stateless_checks_run_in_order() {
        let check = |data: &[u8]| {
            check_stateless(&Verifier::new(), "c1", Topic::Txs, data, 1 << 20, 1 << 16)
        };
        let good = batch(&[tx("c1")]);
        assert_eq!(check(&good).unwrap(), GossipMessage::Txs(vec![tx("c1")]));
        assert!(matches!(
            check_stateless(&Verifier::new(), "c1", Topic::Txs, &good, 10, 1 << 16),
            Err(GossipError::Oversized { .. })
        ));
        assert!(matches!(check(b"\xff\xff"), Err(GossipError::Malformed(_))));
        let mut forged = tx("c1");
        forged.tx.nonce = Nonce(1);
        // One forged tx among good ones spoils the whole batch.
        let mut txs = vec![tx("c1"); 5];
        txs.push(forged);
        assert!(matches!(check(&batch(&txs)), Err(GossipError::BadSignature(_))));
        assert!(matches!(
            check(&batch(&[tx("c1"), tx("c2")])),
            Err(GossipError::WrongChain { .. })
        ));
        assert!(matches!(
            check_stateless(&Verifier::new(), "c1", Topic::Consensus, &good, 1 << 20, 1 << 16),
            Err(GossipError::Malformed(_) | GossipError::BadSignature(_))
        ));
    }

    #[test]
    fn a_batch_is_bounded_in_count_and_in_each_tx() {
        let check = |data: &[u8]| {
            check_stateless(&Verifier::new(), "c1", Topic::Txs, data, 1 << 30, 1 << 16)
        };
        assert!(matches!(check(&batch(&[])), Err(GossipError::Inconsistent(_))));
        let many = vec![tx("c1"); TXS_PER_MESSAGE_MAX + 1];
        assert!(matches!(check(&batch(&many)), Err(GossipError::Inconsistent(_))));
        assert!(check(&batch(&many[1..])).is_ok());
        let one = encode(&tx("c1")).len();
        assert!(matches!(
            check_stateless(
                &Verifier::new(),
                "c1",
                Topic::Txs,
                &batch(&[tx("c1")]),
                1 << 20,
                one - 1
            ),
            Err(GossipError::Oversized { .. })
        ));
    }
}
