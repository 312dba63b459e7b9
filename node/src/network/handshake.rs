//! The chain handshake: peers of another chain or genesis are refused.
//!
//! Every node announces `crucible/<chain_id>/<genesis_hash hex>` as its Identify protocol version
//! (Identify runs on every new connection, over the Noise-authenticated channel). When a peer's
//! Identify info arrives, the node compares it with its own; on a mismatch it disconnects the
//! peer, bans it for the configured time, keeps it out of Kademlia, and reports
//! [`super::NetworkEvent::PeerRefused`]. Only after a matching handshake is a peer reported as
//! connected and its listen addresses added to Kademlia, so the routing table holds peers of this
//! chain only. Kademlia and `sync` also run under chain-specific protocol names, so peers of
//! another chain never even negotiate them.

use consensus::types::Hash;

/// The Identify protocol version a node of `chain_id` with `genesis_hash` announces.
pub fn protocol_version(chain_id: &str, genesis_hash: &Hash) -> String {
    format!("crucible/{chain_id}/{}", genesis_hash.to_hex())
}

/// Why a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer is not a Crucible node, or speaks another handshake version.
    #[error("peer announces {found:?}, not a crucible/<chain_id>/<genesis_hash> handshake")]
    NotCrucible {
        /// What it announced.
        found: String,
    },
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
}

/// Checks a peer's announced protocol version against this node's chain and genesis.
pub fn check(chain_id: &str, genesis_hash: &Hash, announced: &str) -> Result<(), HandshakeError> {
    let not_crucible =
        || HandshakeError::NotCrucible { found: announced.chars().take(200).collect() };
    let rest = announced.strip_prefix("crucible/").ok_or_else(not_crucible)?;
    let (chain, genesis) = rest.rsplit_once('/').ok_or_else(not_crucible)?;
    if chain != chain_id {
        return Err(HandshakeError::WrongChain {
            expected: chain_id.into(),
            found: chain.chars().take(80).collect(),
        });
    }
    if genesis != genesis_hash.to_hex() {
        return Err(HandshakeError::WrongGenesis {
            expected: genesis_hash.to_hex(),
            found: genesis.chars().take(80).collect(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_peers_pass_and_others_are_named() {
        let g = Hash([1; 32]);
        check("c", &g, &protocol_version("c", &g)).unwrap();
        assert!(matches!(
            check("c", &g, &protocol_version("d", &g)),
            Err(HandshakeError::WrongChain { .. })
        ));
        assert!(matches!(
            check("c", &g, &protocol_version("c", &Hash([2; 32]))),
            Err(HandshakeError::WrongGenesis { .. })
        ));
        assert!(matches!(check("c", &g, "/ipfs/0.1.0"), Err(HandshakeError::NotCrucible { .. })));
    }
}
