// Crucible's payloads, hashes and signatures, from docs/protocol.md alone ("Hashes and
// signatures", "Payloads", "Chain membership", "Sync protocol", "Blob protocol").
//
// Decoders return plain objects: u64 fields as BigInt, u32 as Number, hashes and accounts as
// lowercase hex. Structures that are hashed or signed keep their bytes as `raw` (the span they
// were decoded from): the doc says hashes are over the value re-encoded, which is the same bytes
// exactly when every varint was minimal, and `decodeAll` refuses input that was not (a node
// always writes minimal varints).

import crypto from 'node:crypto';
import { DecodeError, Reader, Writer, fromHex, hex } from './postcard.js';

// ---------- hashes and signatures ----------

const u64le = (n) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};

/** tagged_hash(tag, parts) = sha256(u64le(len(tag)) || tag || u64le(len(p)) || p || …). */
export function taggedHash(tag, parts) {
  const h = crypto.createHash('sha256');
  const t = Buffer.from(tag, 'utf8');
  h.update(u64le(t.length)).update(t);
  for (const p of parts) {
    const b = typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p);
    h.update(u64le(b.length)).update(b);
  }
  return new Uint8Array(h.digest());
}

export const sha256 = (bytes) => new Uint8Array(crypto.createHash('sha256').update(bytes).digest());

/** The signing domains' tags (no length prefix). */
export const DOMAIN = {
  tx: 'crucible/sign/tx/v1',
  proposal: 'crucible/sign/proposal/v1',
  prevote: 'crucible/sign/prevote/v1',
  precommit: 'crucible/sign/precommit/v1',
};

/** signing_bytes(domain, chain_id, message) = tag || u64le(len(chain_id)) || chain_id || message. */
export function signingBytes(domainTag, chainId, message) {
  const c = Buffer.from(chainId, 'utf8');
  return Buffer.concat([Buffer.from(domainTag, 'utf8'), u64le(c.length), c, message]);
}

/** The gossip message id: tagged_hash("crucible/gossip-id/v1", [topic, data]). */
export const messageId = (topic, data) => taggedHash('crucible/gossip-id/v1', [topic, data]);

// DER prefixes that wrap a raw 32-byte ed25519 key for node:crypto (RFC 8410).
const SPKI_PREFIX = fromHex('302a300506032b6570032100');
const PKCS8_PREFIX = fromHex('302e020100300506032b657004220420');
const publicKeys = new Map();

function publicKey(account) {
  let key = publicKeys.get(account);
  if (!key) {
    const der = Buffer.concat([SPKI_PREFIX, fromHex(account)]);
    key = crypto.createPublicKey({ key: der, format: 'der', type: 'spki' });
    if (publicKeys.size > 4096) publicKeys.clear();
    publicKeys.set(account, key);
  }
  return key;
}

/** Whether `signature` (hex, R then s) is `account`'s ed25519 signature of `message`. */
export function verify(account, message, signature) {
  try {
    return crypto.verify(null, message, publicKey(account), fromHex(signature));
  } catch {
    return false;
  }
}

/** An ed25519 key from its 32-byte seed: `{ account, sign(message) → hex }`. */
export function keyFromSeed(seed) {
  const der = Buffer.concat([PKCS8_PREFIX, seed]);
  const secret = crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
  const spki = crypto.createPublicKey(secret).export({ format: 'der', type: 'spki' });
  return {
    account: hex(spki.subarray(SPKI_PREFIX.length)),
    sign: (message) => hex(crypto.sign(null, message, secret)),
  };
}

// ---------- decoding ----------

const hash = (r) => hex(r.fixed(32));
const signature = (r) => hex(r.fixed(64));

/** Runs `read` on a sub-span and keeps the span's bytes as `raw`. */
function spanned(r, read) {
  const start = r.pos;
  const value = read(r);
  value.raw = r.bytes.subarray(start, r.pos);
  return value;
}

const TX_KINDS = [
  'Transfer', 'CreateTask', 'JoinTask', 'AttestHeldout', 'RevealHeldoutKey', 'CommitModel',
  'RevealModel', 'CommitScores', 'RevealScores', 'Evidence',
];

function taskSpec(r) {
  const name = r.string(128);
  const kind = r.variant(2, 'TaskKind') === 0
    ? { type: 'Classification', features: r.u32(), classes: r.u32() }
    : {
      type: 'CharLm', vocab: r.u32(), context: r.u32(), d_model: r.u32(), layers: r.u32(),
      heads: r.u32(),
    };
  const preprocessing = r.variant(2, 'Preprocessing') === 0
    ? { type: 'Standardize', mean: r.vec((x) => x.f32(), 4), std: r.vec((x) => x.f32(), 4) }
    : { type: 'Vocabulary', chars: r.string() };
  const dataset = {
    name: r.string(), train_sha256: hash(r), heldout_commitment: hash(r),
    heldout_cipher_sha256: hash(r), key_commitment: hash(r), heldout_examples: r.u64(),
  };
  const limits = {
    max_params: r.u64(), max_artifact_bytes: r.u64(),
    dtypes: r.vec((x) => ['F32', 'F16', 'BF16'][x.variant(3, 'Dtype')]),
  };
  const efficiency = { reference_params: r.u64(), penalty_ppm_per_doubling: r.u32() };
  const bond = r.u64();
  const entry_fee = r.u64();
  const max_trainers = r.u32();
  const min_improvement_ppm = r.u32();
  const windows = {};
  for (const w of ['join', 'commit', 'key', 'reveal', 'score_commit', 'score_reveal']) {
    windows[w] = r.u64();
  }
  const base_model = r.option((x) => ({ model_hash: hash(x), params: x.u64() }));
  return {
    name, kind, preprocessing, dataset, limits, efficiency, bond, entry_fee, max_trainers,
    min_improvement_ppm, windows, base_model,
  };
}

const REJECT_REASONS = [
  'HashMismatch', 'SizeMismatch', 'TooLarge', 'Malformed', 'DisallowedDtype',
  'WrongArchitecture', 'TooManyParams', 'ParamsMismatch', 'NonFinite',
];

function verdictEntry(r) {
  const s = r.variant(4, 'Subject');
  const subject = [
    () => ({ type: 'Baseline' }),
    () => ({ type: 'BaseModel' }),
    () => ({ type: 'Champion', model_hash: hash(r) }),
    () => ({ type: 'Submission', account: hash(r) }),
  ][s]();
  const v = r.variant(3, 'Verdict');
  const verdict = [
    () => ({ type: 'Rejected', reason: REJECT_REASONS[r.variant(9, 'RejectReason')] }),
    () => ({ type: 'Unavailable' }),
    () => ({ type: 'Scored', score_ppm: r.u32() }),
  ][v]();
  return { subject, verdict };
}

function txKind(r) {
  const v = r.variant(TX_KINDS.length, 'TxKind');
  const type = TX_KINDS[v];
  switch (type) {
    case 'Transfer': return { type, to: hash(r), amount: r.u64() };
    case 'CreateTask': return { type, spec: taskSpec(r), reward: r.u64() };
    case 'JoinTask':
    case 'AttestHeldout': return { type, task: r.u64() };
    case 'RevealHeldoutKey': return { type, task: r.u64(), key: hash(r) };
    case 'CommitModel':
    case 'CommitScores': return { type, task: r.u64(), commitment: hash(r) };
    case 'RevealModel':
      return {
        type, task: r.u64(), model_hash: hash(r), salt: hash(r), size_bytes: r.u64(),
        params: r.u64(),
      };
    case 'RevealScores':
      return { type, task: r.u64(), verdicts: r.vec(verdictEntry, 2), salt: hash(r) };
    case 'Evidence': return { type, a: signedVote(r), b: signedVote(r) };
    default: throw new DecodeError(`TxKind ${v}`);
  }
}

/** The unsigned `Tx`. */
export const tx = (r) => spanned(r, (x) => ({ chain_id: x.string(64), nonce: x.u64(), kind: txKind(x) }));

/** `SignedTx`: tx, signer, signature. */
export const signedTx = (r) => spanned(r, (x) => ({ tx: tx(x), signer: hash(x), signature: signature(x) }));

/** `Vote`. */
export const vote = (r) => spanned(r, (x) => ({
  height: x.u64(), round: x.u32(), kind: ['Prevote', 'Precommit'][x.variant(2, 'VoteKind')],
  block: x.option(hash),
}));

/** `SignedVote`. */
export const signedVote = (r) => ({ vote: vote(r), validator: hash(r), signature: signature(r) });

/** `CommitCertificate`. */
export const commitCertificate = (r) => spanned(r, (x) => ({
  height: x.u64(), round: x.u32(), block: hash(x),
  signatures: x.vec((y) => ({ validator: hash(y), signature: signature(y) }), 96),
}));

/** `Header`. */
export const header = (r) => spanned(r, (x) => ({
  chain_id: x.string(64), height: x.u64(), time_ms: x.u64(), prev_hash: hash(x), tx_root: hash(x),
  state_root: hash(x), validators_hash: hash(x), last_commit_hash: hash(x), proposer: hash(x),
}));

/** `Block`: header, txs, last_commit. */
export const block = (r) => ({
  header: header(r),
  txs: r.vec(signedTx, 1 + 1 + 1 + 32 + 64),
  last_commit: r.option(commitCertificate),
});

/** `CommittedBlock`: the `blocks` topic's payload and one item of a sync answer. */
export const committedBlock = (r) => ({ block: block(r), commit: commitCertificate(r) });

/** `Proposal`. */
export const proposal = (r) => spanned(r, (x) => ({
  height: x.u64(), round: x.u32(), block: hash(x), valid_round: x.option((y) => y.u32()),
}));

/** `ConsensusEnvelope`: send counter, then `Message<Block>`. */
export function consensusEnvelope(r) {
  const send = r.u64();
  if (r.variant(2, 'Message') === 0) {
    const signed = { proposal: proposal(r), proposer: hash(r), signature: signature(r) };
    return { send, type: 'Proposal', proposal: signed, block: block(r) };
  }
  return { send, type: 'Vote', vote: signedVote(r) };
}

/** A `txs/2` payload: 1 to 1,024 signed txs. */
export const txBatch = (r) => r.vec(signedTx, 1 + 1 + 1 + 32 + 64, 1024);

/** `Status`: chain id, genesis hash. */
export const status = (r) => ({ chain_id: r.string(), genesis_hash: hash(r) });

/** `StatusResponse`: 0 Welcome(Status), 1 Refused { status, reason }. */
export function statusResponse(r) {
  return r.variant(2, 'StatusResponse') === 0
    ? { type: 'Welcome', status: status(r) }
    : { type: 'Refused', status: status(r), reason: r.string() };
}

/** `SyncResponse`: 0 Blocks(Vec<CommittedBlock>), 1 Unavailable, 2 Busy. */
export function syncResponse(r) {
  const v = r.variant(3, 'SyncResponse');
  if (v === 0) return { type: 'Blocks', blocks: r.vec(committedBlock, 200) };
  return { type: v === 1 ? 'Unavailable' : 'Busy' };
}

/** A blob response body, laid out by hand: tag, then for a chunk u64be size and the data. */
export function blobResponse(body) {
  if (body.length === 0) throw new DecodeError('empty blob response');
  const tag = body[0];
  if (tag === 0) {
    if (body.length < 9) throw new DecodeError('chunk body under 9 bytes');
    const size = Buffer.from(body.subarray(1, 9)).readBigUInt64BE(0);
    return { type: 'Chunk', size_bytes: size, data: body.subarray(9) };
  }
  const type = ['NotFound', 'BadRange', 'Busy'][tag - 1];
  if (!type) throw new DecodeError(`blob response tag ${tag}`);
  if (body.length !== 1) throw new DecodeError(`${type} followed by ${body.length - 1} bytes`);
  return { type };
}

/**
 * Decodes all of `bytes` with `read`: fails on trailing bytes and on non-minimal varints (which
 * would make the raw spans differ from the re-encoded bytes the doc hashes).
 */
export function decodeAll(what, bytes, read) {
  const r = new Reader(bytes);
  const value = read(r);
  r.end(what);
  if (r.nonMinimal) throw new DecodeError(`${what}: ${r.nonMinimal} non-minimal varints`);
  return value;
}

// ---------- encoding ----------

/** postcard(Tx) of a transfer. */
export function encodeTransfer({ chainId, nonce, to, amount }) {
  return new Writer().string(chainId).varint(nonce).varint(0).raw(fromHex(to)).varint(amount)
    .bytes();
}

/** postcard(SignedTx) of an encoded tx, its signer and signature (hex). */
export const encodeSignedTx = (txBytes, signer, sig) =>
  new Writer().raw(txBytes).raw(fromHex(signer)).raw(fromHex(sig)).bytes();

/** A txs/2 batch of encoded signed txs. */
export const encodeBatch = (signed) => {
  const w = new Writer().varint(signed.length);
  for (const s of signed) w.raw(s);
  return w.bytes();
};

/** postcard(Status). */
export const encodeStatus = ({ chain_id, genesis_hash }) =>
  new Writer().string(chain_id).raw(fromHex(genesis_hash)).bytes();

/** postcard(StatusResponse::Welcome(status)). */
export const encodeWelcome = (s) => Buffer.concat([Buffer.from([0]), encodeStatus(s)]);

/** postcard(StatusResponse::Refused { status, reason }). */
export const encodeRefused = (s, reason) =>
  Buffer.concat([Buffer.from([1]), encodeStatus(s), new Writer().string(reason).bytes()]);

/** postcard(SyncRequest { from, count }). */
export const encodeSyncRequest = (from, count) => new Writer().varint(from).varint(count).bytes();

/** postcard(BlobRequest { hash, offset, length }). */
export const encodeBlobRequest = (blobHash, offset, length) =>
  new Writer().raw(fromHex(blobHash)).varint(offset).varint(length).bytes();

/** A frame: u32be(len(body)) || body. */
export function frame(body) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

// ---------- hashes of decoded values ----------

export const txHash = (signed) => hex(taggedHash('crucible/tx/v1', [signed.raw]));
export const blockHash = (h) => hex(taggedHash('crucible/block/v1', [h.raw]));
export const commitHash = (c) => hex(taggedHash('crucible/commit/v1', [c.raw]));
export const txRoot = (txs) =>
  hex(taggedHash('crucible/tx-root/v1', txs.map((t) => fromHex(txHash(t)))));

/** postcard(Vote) of a precommit for `block` at `height` and `round` (what a certificate signs). */
export const encodePrecommit = (height, round, blockId) =>
  new Writer().varint(height).varint(round).varint(1).option(blockId, (w, b) => w.raw(fromHex(b)))
    .bytes();

/** Whether a signed tx's signature passes under its own chain id. */
export const txSignatureOk = (s) =>
  verify(s.signer, signingBytes(DOMAIN.tx, s.tx.chain_id, s.tx.raw), s.signature);
