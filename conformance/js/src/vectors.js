// The test vectors of docs/protocol.md, rebuilt by this implementation: each vector is read from
// the doc itself and compared with what the encoders write (or decoded and checked field by field),
// so a second implementation agrees with the doc before it meets a node.

import fs from 'node:fs';
import * as c from './crucible.js';
import { fromHex, hex } from './postcard.js';

/** Every `Vector \`name\`:` block of the doc, as name → bytes. */
export function readVectors(docPath) {
  const doc = fs.readFileSync(docPath, 'utf8');
  const vectors = new Map();
  for (const m of doc.matchAll(/Vector `([^`]+)`:\s*```hex\n([\s\S]*?)```/g)) {
    vectors.set(m[1], fromHex(m[2].replace(/\s+/g, '')));
  }
  return vectors;
}

/**
 * Checks every vector of the doc at `docPath`; calls `check(what, value)` for each one that
 * matches and throws naming the first that does not.
 */
export function checkVectors(docPath, check) {
  const v = readVectors(docPath);
  const want = (name) => {
    const bytes = v.get(name);
    if (!bytes) throw new Error(`docs/protocol.md has no vector ${name}`);
    return bytes;
  };
  const same = (name, bytes) => {
    if (hex(bytes) !== hex(want(name))) {
      throw new Error(`vector ${name}: the doc says ${hex(want(name))}, built ${hex(bytes)}`);
    }
    check(`vector.${name}`, hex(bytes).slice(0, 16));
  };
  const expect = (cond, what) => {
    if (!cond) throw new Error(what);
  };

  const chainId = 'doc-chain';
  const sender = c.keyFromSeed(new Uint8Array(32).fill(1));
  const recipient = c.keyFromSeed(new Uint8Array(32).fill(2));
  const validator = c.keyFromSeed(new Uint8Array(32).fill(3));
  expect(sender.account === '8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c',
    `sender account ${sender.account}`);

  const txBytes = c.encodeTransfer({ chainId, nonce: 0, to: recipient.account, amount: 1000 });
  same('transfer.tx', txBytes);
  const signing = c.signingBytes(c.DOMAIN.tx, chainId, txBytes);
  same('transfer.signing_bytes', signing);
  const sig = sender.sign(signing);
  same('transfer.signature', fromHex(sig));
  const signed = c.encodeSignedTx(txBytes, sender.account, sig);
  same('transfer.signed_tx', signed);
  const decoded = c.decodeAll('signed tx', signed, c.signedTx);
  expect(c.txSignatureOk(decoded), 'the vector transfer does not verify');
  same('transfer.tx_hash', fromHex(c.txHash(decoded)));
  const batch = c.encodeBatch([signed]);
  same('txs.batch', batch);
  same('txs.message_id', c.messageId(`/crucible/${chainId}/txs/2`, batch));

  const committed = c.decodeAll('committed block', want('block.committed'), c.committedBlock);
  const { header } = committed.block;
  expect(header.chain_id === chainId && header.height === 1n && header.time_ms === 1767225600000n
    && header.prev_hash === '11'.repeat(32) && header.state_root === '22'.repeat(32)
    && header.validators_hash === '33'.repeat(32) && header.last_commit_hash === '00'.repeat(32)
    && header.proposer === validator.account && committed.block.last_commit === null,
  `block.committed header decodes as ${JSON.stringify(header, jsonable)}`);
  same('block.tx_root', fromHex(c.txRoot(committed.block.txs)));
  expect(header.tx_root === c.txRoot(committed.block.txs), 'header tx_root');
  const blockId = c.blockHash(header);
  same('block.hash', fromHex(blockId));
  const cert = committed.commit;
  expect(cert.height === 1n && cert.block === blockId && cert.signatures.length === 1
    && cert.signatures[0].validator === validator.account, 'certificate fields');
  const precommit = c.encodePrecommit(1, 0, blockId);
  expect(c.verify(validator.account, c.signingBytes(c.DOMAIN.precommit, chainId, precommit),
    cert.signatures[0].signature), 'the certificate signature does not verify');
  same('block.commit_hash', fromHex(c.commitHash(cert)));

  const prevote = c.decodeAll('vote', want('prevote.vote'), c.vote);
  expect(prevote.kind === 'Prevote' && prevote.block === blockId, 'prevote fields');
  check('vector.prevote.vote', 'decoded');
  const envelope = c.decodeAll('envelope', want('prevote.envelope'), c.consensusEnvelope);
  expect(envelope.send === 3n && envelope.type === 'Vote'
    && envelope.vote.validator === validator.account, 'prevote envelope fields');
  const voteSigning = c.signingBytes(c.DOMAIN.prevote, chainId, envelope.vote.vote.raw);
  expect(c.verify(validator.account, voteSigning, envelope.vote.signature), 'prevote signature');
  expect(validator.sign(voteSigning) === envelope.vote.signature, 'prevote re-signed');
  check('vector.prevote.envelope', 'signature verified');
  const prop = c.decodeAll('proposal', want('proposal.envelope'), c.consensusEnvelope);
  expect(prop.type === 'Proposal' && prop.send === 0n && prop.proposal.proposal.block === blockId
    && c.blockHash(prop.block.header) === blockId
    && c.verify(prop.proposal.proposer, c.signingBytes(c.DOMAIN.proposal, chainId,
      prop.proposal.proposal.raw), prop.proposal.signature), 'proposal envelope');
  check('vector.proposal.envelope', 'signature verified');

  const docStatus = { chain_id: chainId, genesis_hash: '44'.repeat(32) };
  same('status.request_frame', c.frame(c.encodeStatus(docStatus)));
  const reason = 'peer is on chain "other-chain", this node is on "doc-chain"';
  same('status.refused_frame', c.frame(c.encodeRefused(docStatus, reason)));
  const refused = c.decodeAll('status answer', want('status.refused_frame').subarray(4),
    c.statusResponse);
  expect(refused.type === 'Refused' && refused.reason === reason, 'refused frame decodes');

  same('sync.request_frame', c.frame(c.encodeSyncRequest(1, 64)));
  const busy = c.decodeAll('sync answer', want('sync.busy_frame').subarray(4), c.syncResponse);
  expect(busy.type === 'Busy', 'busy frame decodes');
  const helloHash = hex(c.sha256(Buffer.from('hello')));
  same('blob.request_frame', c.frame(c.encodeBlobRequest(helloHash, 0, 1 << 20)));
  const chunk = c.blobResponse(want('blob.chunk_frame').subarray(4));
  expect(chunk.type === 'Chunk' && chunk.size_bytes === 5n
    && Buffer.from(chunk.data).toString() === 'hello', 'chunk frame decodes');
  expect(c.blobResponse(want('blob.not_found_frame').subarray(4)).type === 'NotFound',
    'not found frame decodes');
  check('vectors', `${v.size} vectors of the doc rebuilt or decoded`);
}

/** JSON.stringify replacer: BigInt as a decimal string, raw spans left out. */
export function jsonable(key, value) {
  if (key === 'raw') return undefined;
  if (typeof value === 'bigint') return value.toString();
  if (value instanceof Uint8Array) return hex(value);
  return value;
}
