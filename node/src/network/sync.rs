//! The `sync` protocol: committed blocks with their certificates, by height range.
//!
//! A node that fell behind asks a peer for `count` blocks from a height
//! ([`super::NetworkClient::request_sync`]); the peer answers from its ledger with
//! [`serve`], bounded by [`SyncLimits`] in count and bytes. The requester checks the shape of
//! the answer here ([`check_response`]); its ledger then verifies every certificate against the
//! validator set of its height when it commits the block.

use consensus::chain::Ledger;
use consensus::encoding::encode;
use consensus::types::Height;
use libp2p::request_response::ResponseChannel;

use super::client::RequestError;
use super::codec::{SyncRequest, SyncResponse};
use super::config::SyncLimits;
use super::gossip::CommittedBlock;

/// Bytes of a sync response frame besides its blocks (enum tag and vector length).
const RESPONSE_OVERHEAD_BYTES: usize = 16;

/// Where the answer to one [`super::NetworkEvent::SyncRequested`] goes; pass it back to
/// [`super::NetworkClient::respond_sync`].
#[derive(Debug)]
pub struct SyncResponder {
    pub(crate) channel: ResponseChannel<SyncResponse>,
    /// Who asked: the answer's bytes are charged to it.
    pub(crate) peer: libp2p::PeerId,
}

/// Why a sync request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The request failed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The peer could not read its store.
    #[error("the peer could not read its store")]
    Unavailable,
    /// The peer throttles us: we asked faster than it serves one peer.
    #[error("the peer is busy (we asked faster than it serves one peer)")]
    Busy,
    /// The answer breaks the protocol (the peer was penalized).
    #[error("bad sync response: {reason}")]
    BadResponse {
        /// What is wrong.
        reason: String,
    },
}

/// The answer to `request` from `ledger`: consecutive committed blocks from `request.from`, at
/// most `request.count` and `limits.blocks_max` of them, and at most `limits.response_bytes_max`
/// bytes encoded (the first block always, since one block always fits the limit).
pub fn serve(ledger: &Ledger, request: &SyncRequest, limits: &SyncLimits) -> SyncResponse {
    let count = request.count.min(limits.blocks_max);
    let mut blocks = Vec::new();
    let mut bytes = RESPONSE_OVERHEAD_BYTES;
    for i in 0..u64::from(count) {
        let height = Height(request.from.0.saturating_add(i));
        if height == Height(0) {
            continue;
        }
        let (block, commit) = match (ledger.block(height), ledger.commit(height)) {
            (Ok(Some(block)), Ok(Some(commit))) => (block, commit),
            (Ok(_), Ok(_)) => break,
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%height, %error, "cannot read a block to serve sync");
                return SyncResponse::Unavailable;
            }
        };
        let committed = CommittedBlock { block, commit };
        let len = encode(&committed).len();
        if bytes + len > limits.response_bytes_max && !blocks.is_empty() {
            break;
        }
        bytes += len;
        blocks.push(committed);
    }
    SyncResponse::Blocks(blocks)
}

/// Checks that `response` answers `request`: at most the count asked, consecutive heights from
/// the one asked (height 0 is genesis and never sent), each certificate for its block, and each
/// block's body the one its header commits to.
pub fn check_response(
    request: &SyncRequest,
    response: SyncResponse,
) -> Result<Vec<CommittedBlock>, SyncError> {
    let blocks = match response {
        SyncResponse::Blocks(blocks) => blocks,
        SyncResponse::Unavailable => return Err(SyncError::Unavailable),
        SyncResponse::Busy => return Err(SyncError::Busy),
    };
    let bad = |reason: String| Err(SyncError::BadResponse { reason });
    if blocks.len() > request.count as usize {
        return bad(format!("{} blocks for a request of {}", blocks.len(), request.count));
    }
    let first = request.from.max(Height(1));
    for (i, committed) in blocks.iter().enumerate() {
        let expected = first.plus(i as u64);
        if committed.height() != expected {
            return bad(format!(
                "block {i} has height {}, expected {expected}",
                committed.height()
            ));
        }
        let cert = &committed.commit;
        if cert.height != expected || cert.block != committed.block.hash() {
            return bad(format!("the certificate at height {expected} is for another block"));
        }
        if let Err(mismatch) = committed.block.check_body() {
            return bad(format!("the block at height {expected}: {mismatch}"));
        }
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use consensus::block::{Block, Header, tx_root};
    use consensus::types::{AccountId, Hash, Round};
    use consensus::vote::CommitCertificate;

    use super::*;

    /// A committed block whose body matches its header (an unsigned last commit above height
    /// 1, which the shape check does not verify).
    fn committed(height: u64) -> CommittedBlock {
        let prev_hash = Hash([9; 32]);
        let last_commit = (height > 1).then(|| CommitCertificate {
            height: Height(height - 1),
            round: Round(0),
            block: prev_hash,
            signatures: Vec::new(),
        });
        let header = Header {
            chain_id: "c".into(),
            height: Height(height),
            time_ms: height,
            prev_hash,
            tx_root: tx_root(&[]),
            state_root: Hash::default(),
            validators_hash: Hash::default(),
            last_commit_hash: last_commit.as_ref().map(CommitCertificate::hash).unwrap_or_default(),
            proposer: AccountId::default(),
        };
        let block = Block { header, txs: Vec::new().into(), last_commit };
        let commit = CommitCertificate {
            height: Height(height),
            round: Round(0),
            block: block.hash(),
            signatures: Vec::new(),
        };
        CommittedBlock { block, commit }
    }

    #[test]
    fn answers_out_of_shape_are_refused() {
        let request = SyncRequest { from: Height(3), count: 2 };
        let ok = vec![committed(3), committed(4)];
        assert_eq!(check_response(&request, SyncResponse::Blocks(ok.clone())).unwrap(), ok);
        let too_many = vec![committed(3), committed(4), committed(5)];
        let gap = vec![committed(3), committed(5)];
        let mut wrong_cert = committed(3);
        wrong_cert.commit.block = Hash([1; 32]);
        // The right header and certificate over another body (its last commit dropped).
        let mut swapped = committed(3);
        swapped.block.last_commit = None;
        for bad in [too_many, gap, vec![wrong_cert], vec![swapped]] {
            assert!(matches!(
                check_response(&request, SyncResponse::Blocks(bad)),
                Err(SyncError::BadResponse { .. })
            ));
        }
        assert_eq!(
            check_response(&request, SyncResponse::Unavailable),
            Err(SyncError::Unavailable)
        );
        assert_eq!(check_response(&request, SyncResponse::Busy), Err(SyncError::Busy));
    }
}
