//! `docs/protocol.md` against the code: every test vector in it is the encoding of a value built
//! here from fixed seeds, and decodes back to that value.
//!
//! A vector in the doc is a line that starts with ``Vector `NAME` `` followed, before the next
//! vector, by a ```` ```hex ```` fenced block; whitespace inside the block is ignored. The doc must
//! hold exactly the vectors built here, each once. ed25519 signatures are deterministic, so the
//! signatures and every hash over them are fixed too: a change to any layout, signing domain,
//! hash tag or frame changes a vector and fails this test.

use std::collections::BTreeMap;
use std::fmt::Debug;

use consensus::bft::{Message, Proposal, SignedProposal};
use consensus::block::{Block, Header, tx_root};
use consensus::crypto::{Domain, Keypair, Signature, Verifier, signing_bytes};
use consensus::encoding::{decode, encode};
use consensus::hash::sha256;
use consensus::tx::{SignedTx, Tx, TxKind};
use consensus::types::{Amount, Hash, Height, Nonce, Round};
use consensus::vote::{CommitCertificate, SignedVote, Vote, VoteKind};
use futures::executor::block_on;
use futures::io::Cursor;
use libp2p::request_response::Codec;
use node::network::codec::{
    BlobCodec, BlobRequest, BlobResponse, StatusCodec, SyncCodec, SyncRequest, SyncResponse,
};
use node::network::gossip::{CommittedBlock, ConsensusEnvelope, Topic, message_id};
use node::network::handshake::{self, STATUS_PROTOCOL, Status};
use node::network::{BLOB_PROTOCOL, sync_protocol};
use serde::Serialize;
use serde::de::DeserializeOwned;

const DOC: &str = include_str!("../../docs/protocol.md");

/// The chain every vector is for.
const CHAIN: &str = "doc-chain";

/// Limits the frame vectors are read back under (the defaults of a chain with default params).
const CHUNK_BYTES_MAX: usize = 1 << 20;
const SYNC_RESPONSE_BYTES_MAX: usize = 8 << 20;

/// The vectors of `doc`, by name, in the order they appear; a name seen twice is a problem.
fn doc_vectors(doc: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut vectors = Vec::new();
    let mut problems = Vec::new();
    let mut pending: Option<String> = None;
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("Vector `") {
            let name = rest.split('`').next().unwrap_or_default().to_string();
            if let Some(unfilled) = pending.replace(name) {
                problems.push(format!("vector {unfilled} has no ```hex block"));
            }
        } else if line == "```hex" {
            let block: String = lines.by_ref().take_while(|l| *l != "```").collect();
            let hex: String = block.chars().filter(|c| !c.is_whitespace()).collect();
            match pending.take() {
                Some(name) if vectors.iter().any(|(n, _)| *n == name) => {
                    problems.push(format!("vector {name} appears twice"))
                }
                Some(name) => vectors.push((name, hex)),
                None => problems.push("a ```hex block without a `Vector` line".into()),
            }
        }
    }
    if let Some(unfilled) = pending {
        problems.push(format!("vector {unfilled} has no ```hex block"));
    }
    (vectors, problems)
}

/// Every value the doc shows, built from fixed seeds.
struct Values {
    tx: Tx,
    signed_tx: SignedTx,
    batch: Vec<SignedTx>,
    prevote: Vote,
    vote_envelope: ConsensusEnvelope,
    proposal_envelope: ConsensusEnvelope,
    committed: CommittedBlock,
    sync_request: SyncRequest,
    blob_request: BlobRequest,
    chunk: BlobResponse,
}

fn values() -> Values {
    let sender = Keypair::from_seed([1; 32]);
    let recipient = Keypair::from_seed([2; 32]).account();
    let validator = Keypair::from_seed([3; 32]);
    let tx = Tx {
        chain_id: CHAIN.into(),
        nonce: Nonce(0),
        kind: TxKind::Transfer { to: recipient, amount: Amount(1_000) },
    };
    let signed_tx = SignedTx::sign(&sender, tx.clone());
    let header = Header {
        chain_id: CHAIN.into(),
        height: Height(1),
        time_ms: 1_767_225_600_000,
        prev_hash: Hash([0x11; 32]),
        tx_root: tx_root(std::slice::from_ref(&signed_tx)),
        state_root: Hash([0x22; 32]),
        validators_hash: Hash([0x33; 32]),
        last_commit_hash: Hash::default(),
        proposer: validator.account(),
    };
    let block = Block { header, txs: vec![signed_tx.clone()].into(), last_commit: None };
    let prevote = Vote {
        height: Height(1),
        round: Round(0),
        kind: VoteKind::Prevote,
        block: Some(block.hash()),
    };
    let vote_envelope = ConsensusEnvelope {
        send: 3,
        message: Message::Vote(SignedVote::sign(&validator, CHAIN, prevote)),
    };
    let proposal =
        Proposal { height: Height(1), round: Round(0), block: block.hash(), valid_round: None };
    let proposal_envelope = ConsensusEnvelope {
        send: 0,
        message: Message::Proposal {
            proposal: SignedProposal::sign(&validator, CHAIN, proposal),
            block: block.clone(),
        },
    };
    let precommit =
        SignedVote::sign(&validator, CHAIN, Vote { kind: VoteKind::Precommit, ..prevote });
    let commit = CommitCertificate::from_precommits([&precommit]).expect("a precommit for a block");
    Values {
        batch: vec![signed_tx.clone()],
        tx,
        signed_tx,
        prevote,
        vote_envelope,
        proposal_envelope,
        committed: CommittedBlock { block, commit },
        sync_request: SyncRequest { from: Height(1), count: 64 },
        blob_request: BlobRequest { hash: sha256(b"hello"), offset: 0, length: 1 << 20 },
        chunk: BlobResponse::Chunk { size_bytes: 5, data: b"hello".to_vec() },
    }
}

/// `bytes` must decode as a `T` equal to `value`.
fn decodes_to<T: Serialize + DeserializeOwned + PartialEq + Debug>(
    bytes: &[u8],
    value: &T,
) -> Result<(), String> {
    let decoded: T = decode("vector", bytes, bytes.len()).map_err(|e| e.to_string())?;
    if decoded == *value { Ok(()) } else { Err(format!("decodes to {decoded:?}, not {value:?}")) }
}

/// Checks that a vector's bytes decode back to its value.
type Check<'a> = Box<dyn Fn(&[u8]) -> Result<(), String> + 'a>;

/// A vector as the code makes it: its bytes and their check.
type Built<'a> = (Vec<u8>, Check<'a>);

/// A postcard vector: its bytes, and the check that they decode back to the value.
fn postcard<T>(value: &T) -> Built<'_>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    (encode(value), Box::new(move |bytes| decodes_to(bytes, value)))
}

/// Bytes with no decoding of their own (a hash, a signature, the signed bytes).
fn raw(bytes: Vec<u8>) -> Built<'static> {
    (bytes, Box::new(|_| Ok(())))
}

fn sync_codec() -> SyncCodec {
    SyncCodec::new(SYNC_RESPONSE_BYTES_MAX)
}

fn blob_codec() -> BlobCodec {
    BlobCodec { chunk_bytes_max: CHUNK_BYTES_MAX }
}

/// What a codec writes, through its `write` call.
fn written(write: impl FnOnce(&mut Cursor<Vec<u8>>) -> std::io::Result<()>) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    write(&mut out).expect("a frame within the limits writes");
    out.into_inner()
}

/// Checks that `read` of `bytes` gives `value`.
fn reads_back<T: PartialEq + Debug>(
    value: &T,
    read: impl FnOnce(&mut Cursor<Vec<u8>>) -> std::io::Result<T>,
    bytes: &[u8],
) -> Result<(), String> {
    let mut input = Cursor::new(bytes.to_vec());
    let decoded = read(&mut input).map_err(|e| e.to_string())?;
    if input.position() as usize != bytes.len() {
        return Err(format!(
            "{} bytes left after the frame",
            bytes.len() - input.position() as usize
        ));
    }
    if decoded == *value { Ok(()) } else { Err(format!("reads as {decoded:?}, not {value:?}")) }
}

/// Every vector: its name, its bytes as the code makes them, and its decoding check.
fn expected<'a>(v: &'a Values) -> Vec<(&'static str, Vec<u8>, Check<'a>)> {
    let sync = sync_protocol(CHAIN);
    let mut out: Vec<(&'static str, Vec<u8>, Check<'a>)> = Vec::new();
    let mut add = |name, (bytes, check): Built<'a>| out.push((name, bytes, check));

    add("transfer.tx", postcard(&v.tx));
    add("transfer.signing_bytes", raw(signing_bytes(Domain::Tx, CHAIN, &encode(&v.tx))));
    // The signature must also pass the acceptance rule over the signed bytes.
    let verifies = |bytes: &[u8]| {
        let signature = Signature(bytes.try_into().map_err(|_| "not 64 bytes".to_string())?);
        let signer = &v.signed_tx.signer;
        Verifier::new()
            .verify(Domain::Tx, CHAIN, signer, &encode(&v.tx), &signature)
            .map_err(|e| e.to_string())
    };
    add("transfer.signature", (v.signed_tx.signature.0.to_vec(), Box::new(verifies)));
    add("transfer.signed_tx", postcard(&v.signed_tx));
    add("transfer.tx_hash", raw(v.signed_tx.hash().0.to_vec()));

    add("txs.batch", postcard(&v.batch));
    let topic = Topic::Txs.ident(CHAIN).hash();
    add("txs.message_id", raw(message_id(&topic, &encode(&v.batch)).0.to_vec()));

    add("prevote.vote", postcard(&v.prevote));
    add("prevote.envelope", postcard(&v.vote_envelope));

    add("block.tx_root", raw(v.committed.block.header.tx_root.0.to_vec()));
    add("block.hash", raw(v.committed.block.hash().0.to_vec()));
    add("proposal.envelope", postcard(&v.proposal_envelope));
    add("block.committed", postcard(&v.committed));
    add("block.commit_hash", raw(v.committed.commit.hash().0.to_vec()));

    let sync_request = v.sync_request;
    let frame = written(|io| block_on(sync_codec().write_request(&sync, io, sync_request)));
    let read = move |bytes: &[u8]| {
        reads_back(&sync_request, |io| block_on(sync_codec().read_request(&sync, io)), bytes)
    };
    add("sync.request_frame", (frame, Box::new(read)));
    let sync = sync_protocol(CHAIN);
    let frame = written(|io| block_on(sync_codec().write_response(&sync, io, SyncResponse::Busy)));
    let read = move |bytes: &[u8]| {
        reads_back(&SyncResponse::Busy, |io| block_on(sync_codec().read_response(&sync, io)), bytes)
    };
    add("sync.busy_frame", (frame, Box::new(read)));

    let status = || Status { chain_id: CHAIN.into(), genesis_hash: Hash([0x44; 32]) };
    let asked = status();
    let frame =
        written(|io| block_on(StatusCodec::default().write_request(&STATUS_PROTOCOL, io, asked)));
    let read = move |bytes: &[u8]| {
        reads_back(
            &status(),
            |io| block_on(StatusCodec::default().read_request(&STATUS_PROTOCOL, io)),
            bytes,
        )
    };
    add("status.request_frame", (frame, Box::new(read)));
    let foreign = Status { chain_id: "other-chain".into(), ..status() };
    let (refusal, _) = handshake::answer(&status(), &foreign);
    let sent = refusal.clone();
    let frame =
        written(|io| block_on(StatusCodec::default().write_response(&STATUS_PROTOCOL, io, sent)));
    let read = move |bytes: &[u8]| {
        reads_back(
            &refusal,
            |io| block_on(StatusCodec::default().read_response(&STATUS_PROTOCOL, io)),
            bytes,
        )
    };
    add("status.refused_frame", (frame, Box::new(read)));

    let blob_request = v.blob_request;
    let frame =
        written(|io| block_on(blob_codec().write_request(&BLOB_PROTOCOL, io, blob_request)));
    let read = move |bytes: &[u8]| {
        reads_back(
            &blob_request,
            |io| block_on(blob_codec().read_request(&BLOB_PROTOCOL, io)),
            bytes,
        )
    };
    add("blob.request_frame", (frame, Box::new(read)));
    let chunk = v.chunk.clone();
    let frame = written(|io| block_on(blob_codec().write_response(&BLOB_PROTOCOL, io, chunk)));
    let read = |bytes: &[u8]| {
        reads_back(&v.chunk, |io| block_on(blob_codec().read_response(&BLOB_PROTOCOL, io)), bytes)
    };
    add("blob.chunk_frame", (frame, Box::new(read)));
    let frame = written(|io| {
        block_on(blob_codec().write_response(&BLOB_PROTOCOL, io, BlobResponse::NotFound))
    });
    let read = |bytes: &[u8]| {
        reads_back(
            &BlobResponse::NotFound,
            |io| block_on(blob_codec().read_response(&BLOB_PROTOCOL, io)),
            bytes,
        )
    };
    add("blob.not_found_frame", (frame, Box::new(read)));
    out
}

/// Every disagreement between `doc`'s vectors and the code.
fn problems(doc: &str) -> Vec<String> {
    let (documented, mut problems) = doc_vectors(doc);
    let documented: BTreeMap<String, String> = documented.into_iter().collect();
    let values = values();
    let expected = expected(&values);
    for (name, bytes, check) in &expected {
        let Some(text) = documented.get(*name) else {
            problems
                .push(format!("vector {name} is missing; the code makes {}", hex::encode(bytes)));
            continue;
        };
        let doc_bytes = match hex::decode(text) {
            Ok(b) => b,
            Err(e) => {
                problems.push(format!("vector {name} is not hex: {e}"));
                continue;
            }
        };
        if doc_bytes != *bytes {
            problems.push(format!(
                "vector {name} differs:\n  doc:  {text}\n  code: {}",
                hex::encode(bytes)
            ));
            continue;
        }
        if let Err(e) = check(&doc_bytes) {
            problems.push(format!("vector {name} does not decode back: {e}"));
        }
    }
    for name in documented.keys() {
        if !expected.iter().any(|(n, _, _)| n == name) {
            problems.push(format!("vector {name} is in the doc but not built by this test"));
        }
    }
    problems
}

#[test]
fn the_doc_vectors_are_the_code_encodings() {
    let problems = problems(DOC);
    assert!(
        problems.is_empty(),
        "docs/protocol.md disagrees with the code:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_changed_or_missing_vector_is_caught() {
    // Flip the last hex digit of one vector (a bit of the signed tx's signature).
    let vector = DOC.find("Vector `transfer.signed_tx`").expect("the vector");
    let block = vector + DOC[vector..].find("```hex\n").expect("its hex block");
    let last = block + DOC[block..].find("\n```\n").expect("its end") - 1;
    let flipped = if &DOC[last..=last] == "0" { "1" } else { "0" };
    let changed = format!("{}{flipped}{}", &DOC[..last], &DOC[last + 1..]);
    let found = problems(&changed);
    assert!(found.iter().any(|p| p.starts_with("vector transfer.signed_tx differs")), "{found:?}");

    let renamed = DOC.replacen("Vector `blob.chunk_frame`", "Vector `blob.chunk`", 1);
    let found = problems(&renamed);
    assert!(found.iter().any(|p| p.starts_with("vector blob.chunk_frame is missing")), "{found:?}");
    assert!(found.iter().any(|p| p.starts_with("vector blob.chunk is in the doc")), "{found:?}");
}
