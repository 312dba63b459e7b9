//! Transactions: what accounts ask the ledger to do, signed.
//!
//! `SignedTx { tx, signer, signature }` with `tx = { chain_id, nonce, kind }`. The signature covers
//! the tx's canonical bytes in the [`Domain::Tx`] domain, with the chain id both inside the tx and
//! in the signed prefix. The nonce must equal the signer's next sequence number; every tx pays the
//! flat `tx_fee`, which is burned. Execution rules are in [`crate::state`].

use serde::{Deserialize, Serialize};

use crate::commitment::{HeldoutKey, Salt};
use crate::crypto::{BatchItem, Domain, Keypair, Signature, SignatureError, Verifier};
use crate::encoding::{DecodeError, decode, encode};
use crate::hash::{tagged_hash, tags};
use crate::task::TaskSpec;
use crate::types::{AccountId, Amount, Hash, ModelHash, Nonce, TaskId};
use crate::verdict::VerdictVector;
use crate::vote::SignedVote;

/// What a transaction does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxKind {
    /// Moves `amount` from the signer to `to`.
    Transfer {
        /// The recipient.
        to: AccountId,
        /// How much.
        amount: Amount,
    },
    /// Opens a task and escrows `reward` from the signer.
    CreateTask {
        /// The task.
        spec: Box<TaskSpec>,
        /// The escrow paid out at finalization.
        reward: Amount,
    },
    /// Joins a task as a trainer, locking its bond.
    JoinTask {
        /// The task.
        task: TaskId,
    },
    /// A validator of the task's stake snapshot says it holds the sealed held-out file (whose
    /// sha256 is the spec's `heldout_cipher_sha256`), in the join window, once.
    AttestHeldout {
        /// The task.
        task: TaskId,
    },
    /// The task's creator reveals the key of the sealed held-out file, after the commit deadline
    /// and by the key deadline; `sha256(key)` must equal the spec's `key_commitment`.
    RevealHeldoutKey {
        /// The task.
        task: TaskId,
        /// The key.
        key: HeldoutKey,
    },
    /// Commits to a model, before the task's commit deadline.
    CommitModel {
        /// The task.
        task: TaskId,
        /// [`crate::commitment::model_commitment`] of the model hash.
        commitment: Hash,
    },
    /// Opens a model commitment, in the reveal window, once the held-out key is on chain.
    RevealModel {
        /// The task.
        task: TaskId,
        /// sha256 of the artifact.
        model_hash: ModelHash,
        /// The commitment's salt.
        salt: Salt,
        /// The artifact's size in bytes.
        size_bytes: u64,
        /// The artifact's non-zero parameter count.
        params: u64,
    },
    /// Commits to a verdict vector, in the scoring window.
    CommitScores {
        /// The task.
        task: TaskId,
        /// [`crate::commitment::scores_commitment`] of the verdict vector.
        commitment: Hash,
    },
    /// Opens a verdict-vector commitment, in the score-reveal window.
    RevealScores {
        /// The task.
        task: TaskId,
        /// The verdicts, in the layout of [`crate::verdict::expected_layout`].
        verdicts: VerdictVector,
        /// The commitment's salt.
        salt: Salt,
    },
    /// Two conflicting signed votes of one validator: slashes it.
    Evidence {
        /// One vote.
        a: SignedVote,
        /// A conflicting vote.
        b: SignedVote,
    },
}

impl TxKind {
    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            TxKind::Transfer { .. } => "transfer",
            TxKind::CreateTask { .. } => "create_task",
            TxKind::JoinTask { .. } => "join_task",
            TxKind::AttestHeldout { .. } => "attest_heldout",
            TxKind::RevealHeldoutKey { .. } => "reveal_heldout_key",
            TxKind::CommitModel { .. } => "commit_model",
            TxKind::RevealModel { .. } => "reveal_model",
            TxKind::CommitScores { .. } => "commit_scores",
            TxKind::RevealScores { .. } => "reveal_scores",
            TxKind::Evidence { .. } => "evidence",
        }
    }
}

/// An unsigned transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tx {
    /// The chain it is for.
    pub chain_id: String,
    /// The signer's sequence number.
    pub nonce: Nonce,
    /// What it does.
    pub kind: TxKind,
}

/// A transaction with its signer and signature.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignedTx {
    /// The transaction.
    pub tx: Tx,
    /// The signing account.
    pub signer: AccountId,
    /// Signature over the tx's canonical bytes in the tx domain.
    pub signature: Signature,
}

impl SignedTx {
    /// Signs `tx` with `key`.
    pub fn sign(key: &Keypair, tx: Tx) -> SignedTx {
        let signature = key.sign(Domain::Tx, &tx.chain_id, &encode(&tx));
        SignedTx { tx, signer: key.account(), signature }
    }

    /// The transaction's id: a tagged hash of its canonical bytes.
    pub fn hash(&self) -> Hash {
        tagged_hash(tags::TX, &[&encode(self)])
    }

    /// Checks the signature with the acceptance rule, for `chain_id`.
    pub fn verify(&self, verifier: &Verifier, chain_id: &str) -> Result<(), SignatureError> {
        verifier.verify(Domain::Tx, chain_id, &self.signer, &encode(&self.tx), &self.signature)
    }

    /// Decodes a signed tx from at most `max_tx_bytes`.
    pub fn decode(bytes: &[u8], max_tx_bytes: usize) -> Result<SignedTx, DecodeError> {
        decode("transaction", bytes, max_tx_bytes)
    }

    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }
}

/// Verifies the signatures of many txs of one chain at once; accepts exactly what
/// [`SignedTx::verify`] accepts for each. Returns the index of the first bad tx.
pub fn verify_txs(
    verifier: &Verifier,
    chain_id: &str,
    txs: &[SignedTx],
) -> Result<(), (usize, SignatureError)> {
    let messages: Vec<Vec<u8>> = txs.iter().map(|t| encode(&t.tx)).collect();
    let items: Vec<BatchItem<'_>> = txs
        .iter()
        .zip(&messages)
        .map(|(t, m)| BatchItem {
            domain: Domain::Tx,
            signer: &t.signer,
            message: m,
            signature: &t.signature,
        })
        .collect();
    verifier.verify_batch(chain_id, &items)
}
