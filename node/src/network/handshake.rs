//! The chain handshake: a status exchange, so peers of another chain or genesis are refused, and
//! told why.
//!
//! On every new connection both sides open a `/crucible/status/1` request-response stream
//! (the protocol name is the same on every chain, so a peer of another chain can negotiate it
//! and read its refusal) and send their [`Status`]: chain id and genesis hash. The answer is
//! [`StatusResponse::Welcome`] with the answerer's status when the two match, or
//! [`StatusResponse::Refused`] with its status and the reason in words; the answerer then
//! disconnects the asker and bans it for the configured time. Any libp2p implementation can
//! do this through its public request-response or stream API.
//!
//! A peer is a member once one exchange shows a matching status: its request, or its answer to
//! ours. Only then is it reported as connected and its Identify listen addresses added to
//! Kademlia, so the routing table holds peers of this chain only. A peer that refuses us, answers
//! with another chain's status, or takes our question and gives no answer (a reset stream, or
//! none within the request timeout) before it has shown a matching status is refused and
//! banned. A peer that does not speak the protocol at all stays a bare libp2p peer: it is served
//! gossip, `sync` and `blob` under this chain's names like any peer, but never listed or routed
//! to. Kademlia
//! and `sync` also run under chain-specific protocol names, so peers of another chain never even
//! negotiate them. Stake plays no part: an observer that only reads gossip is a member too.

use consensus::types::Hash;
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

/// The status protocol's name, the same on every chain.
pub const STATUS_PROTOCOL: StreamProtocol = StreamProtocol::new("/crucible/status/1");

/// What a node says it is: the request, and in every answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The chain's id.
    pub chain_id: String,
    /// The hash of the chain's genesis document.
    pub genesis_hash: Hash,
}

/// The answer to a [`Status`] request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatusResponse {
    /// The statuses match: the asker is a member.
    Welcome(Status),
    /// They do not: the answerer disconnects and bans the asker after sending this.
    Refused {
        /// The answerer's status.
        status: Status,
        /// Why, in words (the answerer's [`HandshakeError`]).
        reason: String,
    },
}

/// The Identify protocol version a node announces: informational only (the status exchange
/// decides membership), but it names the chain for tools that only speak Identify.
pub fn protocol_version(status: &Status) -> String {
    format!("crucible/{}/{}", status.chain_id, status.genesis_hash.to_hex())
}

/// Why a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer is on another chain.
    #[error("peer is on chain {found:?}, this node is on {expected:?}")]
    WrongChain {
        /// This node's chain.
        expected: String,
        /// The peer's.
        found: String,
    },
    /// Same chain id, another genesis.
    #[error("peer has genesis {found}, this node has {expected}")]
    WrongGenesis {
        /// This node's genesis hash.
        expected: String,
        /// The peer's.
        found: String,
    },
    /// The peer took the status request but gave no answer (a reset stream, or none in time)
    /// before showing its status.
    #[error("peer gave no status: {0}")]
    NoStatus(String),
    /// The peer refused us although our statuses match (a faulty peer).
    #[error("peer refused us: {0}")]
    RefusedByPeer(String),
}

/// Checks a peer's status against this node's.
pub fn check(ours: &Status, theirs: &Status) -> Result<(), HandshakeError> {
    if theirs.chain_id != ours.chain_id {
        return Err(HandshakeError::WrongChain {
            expected: ours.chain_id.clone(),
            found: theirs.chain_id.chars().take(80).collect(),
        });
    }
    if theirs.genesis_hash != ours.genesis_hash {
        return Err(HandshakeError::WrongGenesis {
            expected: ours.genesis_hash.to_hex(),
            found: theirs.genesis_hash.to_hex(),
        });
    }
    Ok(())
}

/// This node's answer to a peer's status request, and whether the peer is a member.
pub fn answer(ours: &Status, theirs: &Status) -> (StatusResponse, Result<(), HandshakeError>) {
    match check(ours, theirs) {
        Ok(()) => (StatusResponse::Welcome(ours.clone()), Ok(())),
        Err(reason) => (
            StatusResponse::Refused { status: ours.clone(), reason: reason.to_string() },
            Err(reason),
        ),
    }
}

/// What a peer's answer to our status request says: `Ok` when it is a member. A refusal is
/// named by our own check of the status it carries, when that fails, so both sides of a
/// mismatch report the same reason.
pub fn read_answer(ours: &Status, answer: &StatusResponse) -> Result<(), HandshakeError> {
    match answer {
        StatusResponse::Welcome(theirs) => check(ours, theirs),
        StatusResponse::Refused { status, reason } => {
            check(ours, status)?;
            Err(HandshakeError::RefusedByPeer(reason.chars().take(200).collect()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(chain: &str, genesis: u8) -> Status {
        Status { chain_id: chain.into(), genesis_hash: Hash([genesis; 32]) }
    }

    #[test]
    fn matching_peers_are_welcome_and_others_are_told_why() {
        let ours = status("c", 1);
        assert_eq!(answer(&ours, &status("c", 1)), (StatusResponse::Welcome(ours.clone()), Ok(())));
        let (refusal, reason) = answer(&ours, &status("d", 1));
        assert!(matches!(reason, Err(HandshakeError::WrongChain { .. })));
        assert!(
            matches!(&refusal, StatusResponse::Refused { status, reason }
                if *status == ours && reason.contains("\"d\"") && reason.contains("\"c\"")),
            "{refusal:?}"
        );
        assert!(matches!(
            answer(&ours, &status("c", 2)).1,
            Err(HandshakeError::WrongGenesis { .. })
        ));
    }

    #[test]
    fn an_answer_is_read_by_our_own_check() {
        let ours = status("c", 1);
        read_answer(&ours, &StatusResponse::Welcome(status("c", 1))).unwrap();
        // A welcome carrying another chain's status is no welcome.
        assert!(matches!(
            read_answer(&ours, &StatusResponse::Welcome(status("d", 1))),
            Err(HandshakeError::WrongChain { .. })
        ));
        let refused = |s| StatusResponse::Refused { status: s, reason: "no".into() };
        assert!(matches!(
            read_answer(&ours, &refused(status("c", 2))),
            Err(HandshakeError::WrongGenesis { .. })
        ));
        assert_eq!(
            read_answer(&ours, &refused(status("c", 1))),
            Err(HandshakeError::RefusedByPeer("no".into()))
        );
    }
}
