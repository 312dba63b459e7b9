#!/usr/bin/env node
// A Crucible peer written with js-libp2p from docs/protocol.md (and docs/api.md for HTTP reads)
// alone. It joins a running network through one validator and checks what the doc promises; see
// README.md. Every check it passes is one JSON line on stdout, {"check": what, "value": …}; the
// first failure ends it with exit code 1 and a line on stderr saying what failed.
//
//   node peer.js --addr /ip4/127.0.0.1/tcp/P/p2p/12D3… --http http://127.0.0.1:H \
//     --key SEED_FILE --to ACCOUNT --amount N [--max-block-bytes B] [--timeout S]
//   node peer.js --vectors-only

import './src/node20.js';
import { parseArgs } from 'node:util';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLibp2p } from 'libp2p';
import { tcp } from '@libp2p/tcp';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { identify } from '@libp2p/identify';
import { gossipsub } from '@chainsafe/libp2p-gossipsub';
import { multiaddr } from '@multiformats/multiaddr';
import { peerIdFromString } from '@libp2p/peer-id';
import * as c from './src/crucible.js';
import { fromHex, hex } from './src/postcard.js';
import { readFrame, request, writeFrame } from './src/streams.js';
import { checkVectors, jsonable } from './src/vectors.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const STATUS = '/crucible/status/1';
const BLOB = '/crucible/blob/1';
/** Status, sync and blob request frames, and status answers (`REQUEST_BYTES_MAX`). */
const REQUEST_BYTES_MAX = 1024;
/** The chunk size asked for, and so the largest chunk data accepted (the node's default). */
const CHUNK_BYTES = 1 << 20;
/** Without `--max-block-bytes`: the largest `max_block_bytes` a genesis may set (the doc's Limits). */
const MAX_BLOCK_BYTES_DEFAULT = 64 * 1024 * 1024;
/** A request's timeout (the doc: 30 s). */
const REQUEST_MS = 30_000;

const { values: args } = parseArgs({
  options: {
    addr: { type: 'string' },
    http: { type: 'string' },
    key: { type: 'string' },
    to: { type: 'string' },
    amount: { type: 'string' },
    'max-block-bytes': { type: 'string' },
    timeout: { type: 'string', default: '240' },
    doc: { type: 'string', default: path.join(HERE, '..', '..', 'docs', 'protocol.md') },
    'vectors-only': { type: 'boolean', default: false },
  },
});

/** Prints one passed check. */
function check(what, value) {
  process.stdout.write(`${JSON.stringify({ check: what, value }, jsonable)}\n`);
}

/** A failed expectation. */
class CheckFailed extends Error {}

function expect(cond, what) {
  if (!cond) throw new CheckFailed(what);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let deadline = Infinity;

/** Polls `probe` until it returns a value other than undefined, failing at the deadline. */
async function until(what, probe, everyMs = 200) {
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new CheckFailed(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

async function getJson(route) {
  const res = await fetch(`${args.http}${route}`);
  if (!res.ok) {
    const err = new Error(`GET ${route}: ${res.status} ${await res.text()}`);
    err.status = res.status;
    throw err;
  }
  return res.json();
}

/** A libp2p node with the doc's stack: TCP, Noise, Yamux, Identify, and what `services` adds. */
function libp2pNode(services = {}) {
  return createLibp2p({
    addresses: { listen: [] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: { identify: identify(), ...services },
  });
}

/**
 * Serves `/crucible/status/1` on `node` as the doc asks of every peer: answers `Welcome(ours)`
 * when the asker's status matches ours, else `Refused`. Every question it reads is passed to
 * `onQuestion`.
 */
async function serveStatus(node, ours, onQuestion) {
  await node.handle(STATUS, async ({ stream }) => {
    try {
      const body = await readFrame(stream.source, REQUEST_BYTES_MAX, 'status question', REQUEST_MS);
      const theirs = c.decodeAll('status question', body, c.status);
      onQuestion(theirs);
      const same = theirs.chain_id === ours.chain_id && theirs.genesis_hash === ours.genesis_hash;
      await writeFrame(stream, same
        ? c.encodeWelcome(ours)
        : c.encodeRefused(ours, `peer has chain ${theirs.chain_id} genesis ${theirs.genesis_hash}`));
    } catch (err) {
      onQuestion(null, err);
      stream.abort(err);
    }
  });
}

/** Asks the node's status; returns the decoded answer. */
async function askStatus(node, peer, ours) {
  const body = await request(node, peer, STATUS, c.encodeStatus(ours), REQUEST_BYTES_MAX,
    REQUEST_MS);
  return c.decodeAll('status answer', body, c.statusResponse);
}

/**
 * A peer claiming another genesis is refused, told why in a `Refused` answer carrying the node's
 * status, disconnected, and banned (a second connection is closed too).
 */
async function wrongGenesisIsRefused(addr, peer, chain) {
  const flipped = fromHex(chain.genesis_hash);
  flipped[0] ^= 0xff;
  const wrong = { chain_id: chain.chain_id, genesis_hash: hex(flipped) };
  const node = await libp2pNode();
  try {
    let asked;
    await serveStatus(node, wrong, (q) => { asked ??= q; });
    await node.dial(addr);
    const answer = await askStatus(node, peer, wrong);
    expect(answer.type === 'Refused', `a wrong genesis was answered ${answer.type}`);
    expect(answer.status.chain_id === chain.chain_id
      && answer.status.genesis_hash === chain.genesis_hash,
    `the refusal carries status ${JSON.stringify(answer.status)}, not the node's`);
    expect(answer.reason.includes(wrong.genesis_hash) && answer.reason.includes(chain.genesis_hash),
      `the refusal's reason names neither genesis: ${answer.reason}`);
    check('status.wrong_genesis_refused', answer.reason);
    // The doc: a refused peer has the node's status from the node's own question too, when that
    // question arrived before the hang-up.
    if (asked) {
      expect(asked.chain_id === chain.chain_id && asked.genesis_hash === chain.genesis_hash,
        `the node asked the refused peer with status ${JSON.stringify(asked)}`);
    }
    check('status.refused_peer_asked_by_node', Boolean(asked));
    const closed = (what) => until(what, () => (node.getConnections(peer).length === 0
      ? true : undefined), 100);
    let started = Date.now();
    await closed('the refused peer to be disconnected');
    check('status.refused_peer_disconnected_ms', Date.now() - started);
    // Banned: a new connection is closed once established (or refused outright).
    started = Date.now();
    await node.dial(addr).catch(() => {});
    await closed('the banned peer\'s second connection to be closed');
    check('status.banned_peer_connection_closed_ms', Date.now() - started);
  } finally {
    await node.stop();
  }
}

/** Checks a block's body against its header (the doc's `Block::check_body`) and the chain id. */
function checkBody(b, chainId, what) {
  const h = b.header;
  expect(h.chain_id === chainId, `${what}: chain id ${h.chain_id}`);
  expect(h.tx_root === c.txRoot(b.txs), `${what}: tx_root does not match its txs`);
  for (const t of b.txs) {
    expect(t.tx.chain_id === chainId, `${what}: a tx of chain ${t.tx.chain_id}`);
    expect(c.txSignatureOk(t), `${what}: tx ${c.txHash(t)} has a bad signature`);
  }
  if (h.height === 1n) {
    expect(b.last_commit === null && h.last_commit_hash === '00'.repeat(32),
      `${what}: a first block with a last commit`);
  } else {
    expect(b.last_commit !== null, `${what}: no last commit above height 1`);
    expect(c.commitHash(b.last_commit) === h.last_commit_hash, `${what}: last_commit_hash`);
    expect(b.last_commit.height === h.height - 1n && b.last_commit.block === h.prev_hash,
      `${what}: the last commit is not for the previous block`);
  }
}

/**
 * Checks a commit certificate: for this block, signatures sorted by validator, each a precommit
 * of a known validator, more than two thirds of the power.
 */
function checkCertificate(cert, blockId, height, chainId, validators, what) {
  expect(cert.height === height && cert.block === blockId, `${what}: certificate for another block`);
  expect(cert.signatures.length >= 1 && cert.signatures.length <= 256,
    `${what}: ${cert.signatures.length} signatures`);
  const vote = c.encodePrecommit(cert.height, cert.round, cert.block);
  const signed = c.signingBytes(c.DOMAIN.precommit, chainId, vote);
  let power = 0n;
  let previous = '';
  for (const s of cert.signatures) {
    expect(s.validator > previous, `${what}: signatures not sorted by validator, one each`);
    previous = s.validator;
    expect(c.verify(s.validator, signed, s.signature), `${what}: a bad precommit signature`);
    power += validators.get(s.validator) ?? 0n;
  }
  const total = [...validators.values()].reduce((a, b) => a + b, 0n);
  expect(3n * power > 2n * total, `${what}: signers hold ${power} of ${total} power`);
}

/** The gossip state: what arrived on each topic, decoded and checked. */
class Gossip {
  constructor(chain, validators) {
    this.chain = chain;
    this.validators = validators;
    this.topics = {
      txs: `/crucible/${chain.chain_id}/txs/2`,
      consensus: `/crucible/${chain.chain_id}/consensus/1`,
      blocks: `/crucible/${chain.chain_id}/blocks/1`,
    };
    this.counts = { txs: 0, consensus: 0, blocks: 0, proposals: 0, votes: 0, txsIn: 0 };
    /** height → committed block (header hash, block, its txs' hashes). */
    this.blocks = new Map();
    /** Every decoded tx seen on any topic, by hash. */
    this.txs = new Map();
    /** The height of every tx seen in a committed block, by hash. */
    this.committedAt = new Map();
    this.error = null;
  }

  /** Handles one message; a failure is kept and reported by the main loop. */
  receive(topic, data) {
    try {
      this.decode(topic, data);
    } catch (err) {
      this.error ??= new CheckFailed(`gossip on ${topic} (${data.length} bytes): ${err.message}`);
    }
  }

  decode(topic, data) {
    const chainId = this.chain.chain_id;
    if (topic === this.topics.txs) {
      const batch = c.decodeAll('txs batch', data, c.txBatch);
      expect(batch.length >= 1, 'an empty tx batch');
      for (const t of batch) {
        expect(t.tx.chain_id === chainId, `a tx of chain ${t.tx.chain_id}`);
        expect(c.txSignatureOk(t), 'a gossiped tx with a bad signature');
        this.txs.set(c.txHash(t), t);
      }
      this.counts.txs++;
      this.counts.txsIn += batch.length;
    } else if (topic === this.topics.consensus) {
      const env = c.decodeAll('consensus envelope', data, c.consensusEnvelope);
      if (env.type === 'Proposal') {
        const p = env.proposal;
        const blockId = c.blockHash(env.block.header);
        expect(p.proposal.block === blockId && p.proposal.height === env.block.header.height,
          'a proposal for another block than it carries');
        checkBody(env.block, chainId, `proposal at ${p.proposal.height}`);
        expect(c.verify(p.proposer, c.signingBytes(c.DOMAIN.proposal, chainId, p.proposal.raw),
          p.signature), 'a proposal with a bad signature');
        expect(this.validators.has(p.proposer), 'a proposal by a non-validator');
        this.counts.proposals++;
      } else {
        const v = env.vote;
        const domain = v.vote.kind === 'Prevote' ? c.DOMAIN.prevote : c.DOMAIN.precommit;
        expect(c.verify(v.validator, c.signingBytes(domain, chainId, v.vote.raw), v.signature),
          'a vote with a bad signature');
        expect(this.validators.has(v.validator), 'a vote by a non-validator');
        this.counts.votes++;
      }
      this.counts.consensus++;
    } else if (topic === this.topics.blocks) {
      const cb = c.decodeAll('committed block', data, c.committedBlock);
      this.addCommitted(cb, 'gossiped block');
      this.counts.blocks++;
    } else {
      throw new Error(`a message on a topic we did not subscribe to: ${topic}`);
    }
  }

  /** Checks a committed block (body, certificate, links to its neighbours) and keeps it. */
  addCommitted(cb, what) {
    const { header } = cb.block;
    const id = c.blockHash(header);
    const at = `${what} ${header.height}`;
    checkBody(cb.block, this.chain.chain_id, at);
    checkCertificate(cb.commit, id, header.height, this.chain.chain_id, this.validators, at);
    if (header.height === 1n) {
      expect(header.prev_hash === this.chain.genesis_hash, `${at}: prev_hash is not the genesis`);
    }
    const known = this.blocks.get(header.height);
    if (known) expect(known.id === id, `${at}: two different blocks at one height`);
    const before = this.blocks.get(header.height - 1n);
    if (before) {
      expect(header.prev_hash === before.id, `${at}: prev_hash is not the previous block's hash`);
      expect(header.time_ms > before.block.header.time_ms, `${at}: time_ms not increasing`);
    }
    const after = this.blocks.get(header.height + 1n);
    if (after) expect(after.block.header.prev_hash === id, `${at}: the next block does not link`);
    this.blocks.set(header.height, { id, block: cb.block });
    for (const t of cb.block.txs) {
      const h = c.txHash(t);
      this.txs.set(h, t);
      this.committedAt.set(h, header.height);
    }
  }

  /** The longest run of consecutive heights held, whose links were all checked. */
  linkedRun() {
    let best = 0;
    for (const h of this.blocks.keys()) {
      if (this.blocks.has(h - 1n)) continue;
      let n = 0;
      while (this.blocks.has(h + BigInt(n))) n++;
      best = Math.max(best, n);
    }
    return best;
  }
}

/** Fetches a whole blob by the blob protocol; checks every chunk's size and the sha256. */
async function fetchBlob(node, peer, blobHash, sizeBytes) {
  const size = BigInt(sizeBytes);
  const parts = [];
  for (let offset = 0n; offset < size || (size === 0n && offset === 0n);) {
    const body = await request(node, peer, BLOB, c.encodeBlobRequest(blobHash, offset, CHUNK_BYTES),
      CHUNK_BYTES + 9, REQUEST_MS);
    const answer = c.blobResponse(body);
    if (answer.type === 'NotFound' && offset === 0n) return null;
    if (answer.type === 'Busy') {
      await sleep(200);
      continue;
    }
    expect(answer.type === 'Chunk', `blob chunk at ${offset}: ${answer.type}`);
    expect(answer.size_bytes === size, `blob announces ${answer.size_bytes} bytes, revealed ${size}`);
    const want = size - offset < BigInt(CHUNK_BYTES) ? size - offset : BigInt(CHUNK_BYTES);
    expect(BigInt(answer.data.length) === want,
      `blob chunk at ${offset} holds ${answer.data.length} bytes, not ${want}`);
    parts.push(Buffer.from(answer.data));
    offset += want;
    if (size === 0n) break;
  }
  return Buffer.concat(parts);
}

/**
 * The member: joins through the validator, answers and asks the status exchange, reads and checks
 * the gossip, syncs blocks, publishes a transfer and fetches a revealed artifact.
 */
async function member(addr, peer, chain, validators) {
  const gossip = new Gossip(chain, validators);
  const maxBlockBytes = Number(args['max-block-bytes'] ?? MAX_BLOCK_BYTES_DEFAULT);
  let question;
  const node = await libp2pNode({
    pubsub: gossipsub({
      // The doc's "Signing mode": unsigned and anonymous both ways.
      globalSignaturePolicy: 'StrictNoSign',
      // The doc's "Message id"; with the default (from and seqno) the node's ids would differ.
      msgIdFn: (msg) => c.messageId(msg.topic, msg.data),
      // The doc's "Size": js-libp2p's default (4 MiB) is under the node's gossip_bytes_max.
      maxInboundDataLength: maxBlockBytes + 65_536,
      fallbackToFloodsub: false,
      doPX: false,
    }),
  });
  try {
    await serveStatus(node, chain, (q, err) => { question ??= q ?? err; });
    const pubsub = node.services.pubsub;
    pubsub.addEventListener('message', (evt) => gossip.receive(evt.detail.topic, evt.detail.data));
    for (const t of Object.values(gossip.topics)) pubsub.subscribe(t);
    const failed = () => {
      if (gossip.error) throw gossip.error;
    };

    await node.dial(addr);
    const answer = await askStatus(node, peer, chain);
    expect(answer.type === 'Welcome', `our status was refused: ${answer.reason}`);
    expect(answer.status.chain_id === chain.chain_id
      && answer.status.genesis_hash === chain.genesis_hash,
    `welcomed with another status: ${JSON.stringify(answer.status)}`);
    check('status.welcome', answer.status);
    const asked = await until('the node to ask our status', () => question);
    if (asked instanceof Error) throw new CheckFailed(`answering the node's question: ${asked.message}`);
    expect(asked.chain_id === chain.chain_id && asked.genesis_hash === chain.genesis_hash,
      `the node asked with status ${JSON.stringify(asked)}`);
    check('status.answered_node', asked);

    // A member: listed by the node, its account the ed25519 key inside our PeerId.
    const me = node.peerId.toString();
    const listed = await until('GET /peers to list this peer', async () =>
      (await getJson('/peers')).find((p) => p.peer_id === me));
    const account = hex(node.peerId.publicKey.raw);
    expect(listed.account === account, `GET /peers gives our account as ${listed.account}, not ${account}`);
    check('http.peers_lists_us', { peer_id: me, account });

    await until('the node to subscribe to the three topics', () => (Object.values(gossip.topics)
      .every((t) => pubsub.getSubscribers(t).some((p) => p.equals(peer))) ? true : undefined));
    check('gossip.joined', Object.values(gossip.topics));

    // The blocks topic is a best-effort feed (a copy that reaches a node after it committed the
    // height is not relayed): gaps are filled by sync below.
    await until('3 committed blocks, a proposal and a vote by gossip', () => {
      failed();
      return gossip.counts.blocks >= 3 && gossip.counts.proposals >= 1 && gossip.counts.votes >= 1
        ? true : undefined;
    });
    check('gossip.blocks', {
      received: gossip.counts.blocks, linked_run: gossip.linkedRun(),
      tip: [...gossip.blocks.keys()].reduce((a, b) => (a > b ? a : b)),
    });
    check('gossip.consensus', { proposals: gossip.counts.proposals, votes: gossip.counts.votes });

    // Sync: blocks 1… from the validator, checked and linked to the gossiped ones.
    const syncProtocol = `/crucible/${chain.chain_id}/sync/1`;
    const syncLimit = Math.max(maxBlockBytes + 65_536, 8 * 1024 * 1024);
    const sync = async (from, count) => {
      const answer = c.decodeAll('sync answer', await request(node, peer, syncProtocol,
        c.encodeSyncRequest(from, count), syncLimit, REQUEST_MS), c.syncResponse);
      expect(answer.type === 'Blocks', `sync from ${from} answered ${answer.type}`);
      expect(answer.blocks.length <= count,
        `sync answered ${answer.blocks.length} blocks for ${count} from height ${from}`);
      answer.blocks.forEach((cb, i) => {
        expect(cb.block.header.height === BigInt(from) + BigInt(i),
          `synced block ${i} from ${from} has height ${cb.block.header.height}`);
        gossip.addCommitted(cb, 'synced block');
      });
      return answer.blocks;
    };
    const synced = await sync(1, 64);
    const last = synced.length;
    expect(last >= 3, `sync from height 1 answered ${last} blocks`);
    expect(gossip.linkedRun() >= last, `heights 1 to ${last} are not all linked`);
    const httpBlock = await getJson(`/blocks/${last}`);
    expect(JSON.stringify(httpBlock).includes(gossip.blocks.get(BigInt(last)).id),
      `GET /blocks/${last} does not show the synced block's hash ${gossip.blocks.get(BigInt(last)).id}`);
    check('sync.blocks', { from: 1, count: last, hash_of_last: gossip.blocks.get(BigInt(last)).id });
    const past = c.decodeAll('sync answer', await request(node, peer, syncProtocol,
      c.encodeSyncRequest(1_000_000_000, 64), syncLimit, REQUEST_MS), c.syncResponse);
    expect(past.type === 'Blocks' && past.blocks.length === 0,
      `a sync request past the tip was answered ${past.type} ${past.blocks?.length}`);
    check('sync.past_tip', 'empty Blocks');

    // A transfer from the funded key, signed here and published over gossip.
    const seed = fromHex(fs.readFileSync(args.key, 'utf8').trim());
    expect(seed.length === 32, `${args.key} does not hold a 32-byte hex seed`);
    const key = c.keyFromSeed(seed);
    const from = await getJson(`/accounts/${key.account}`);
    const txBytes = c.encodeTransfer({
      chainId: chain.chain_id, nonce: from.nonce, to: args.to, amount: BigInt(args.amount),
    });
    const sig = key.sign(c.signingBytes(c.DOMAIN.tx, chain.chain_id, txBytes));
    const signed = c.encodeSignedTx(txBytes, key.account, sig);
    const txHash = c.txHash(c.decodeAll('our tx', signed, c.signedTx));
    const published = await pubsub.publish(gossip.topics.txs, c.encodeBatch([signed]));
    expect(published.recipients.some((p) => p.equals(peer)), 'our tx batch was sent to no node');
    check('transfer.published', {
      hash: txHash, from: key.account, nonce: from.nonce, to: args.to, amount: args.amount,
    });
    // Committed: seen in a gossiped block, or else named by GET /txs/{hash} (404 while pending)
    // and then fetched by sync; either way its block is checked and must hold it.
    const seen = await until(`our transfer ${txHash} to commit`, async () => {
      failed();
      if (gossip.committedAt.has(txHash)) return 'gossip';
      const res = await fetch(`${args.http}/txs/${txHash}`);
      if (res.status === 404) return undefined;
      expect(res.ok, `GET /txs/${txHash}: ${res.status}`);
      return 'sync';
    }, 300);
    const httpTx = await getJson(`/txs/${txHash}`);
    expect(httpTx.kind === 'transfer' && httpTx.signer === key.account && httpTx.nonce === from.nonce,
      `GET /txs/${txHash}: ${JSON.stringify(httpTx)}`);
    if (seen === 'sync') await sync(httpTx.height, 1);
    const height = gossip.committedAt.get(txHash);
    expect(height === BigInt(httpTx.height)
      && gossip.blocks.get(height).id === httpTx.block_hash,
    `our transfer is at height ${height} here, ${httpTx.height} in block ${httpTx.block_hash} by GET /txs`);
    check('transfer.committed', { hash: txHash, height, block_seen_by: seen });

    await until('a txs gossip message', () => {
      failed();
      return gossip.counts.txs >= 1 ? true : undefined;
    });
    check('gossip.txs', { batches: gossip.counts.txs, txs: gossip.counts.txsIn });

    // An artifact a trainer revealed, by the blob protocol, from the validator once it holds it.
    // Looked for in the txs gossip and in blocks; blocks the gossip missed are synced.
    const reveal = await until('a RevealModel tx', async () => {
      failed();
      const found = () => [...gossip.txs.values()].find((t) => t.tx.kind.type === 'RevealModel');
      if (!found()) {
        let next = 1n;
        while (gossip.blocks.has(next)) next++;
        await sync(next, 64);
      }
      return found();
    }, 1000);
    const { model_hash: modelHash, size_bytes: size } = reveal.tx.kind;
    check('blob.revealed', { model_hash: modelHash, size_bytes: size });
    const blob = await until(`the validator to serve blob ${modelHash}`,
      () => fetchBlob(node, peer, modelHash, size).then((b) => b ?? undefined), 500);
    expect(hex(c.sha256(blob)) === modelHash, `blob ${modelHash} hashes to ${hex(c.sha256(blob))}`);
    check('blob.fetched', { hash: modelHash, size_bytes: blob.length, sha256_ok: true });
    const blobAnswer = async (h, offset) => c.blobResponse(await request(node, peer, BLOB,
      c.encodeBlobRequest(h, offset, CHUNK_BYTES), CHUNK_BYTES + 9, REQUEST_MS)).type;
    const badRange = await blobAnswer(modelHash, size);
    expect(badRange === 'BadRange', `a request at the blob's end was answered ${badRange}`);
    const unknown = await blobAnswer(hex(c.sha256(Buffer.from(`no such blob ${Date.now()}`))), 0n);
    expect(unknown === 'NotFound', `a request for an unknown blob was answered ${unknown}`);
    check('blob.errors', { at_end: badRange, unknown });

    failed();
    const score = (await getJson('/peers')).find((p) => p.peer_id === me)?.score;
    expect(score === null || score === undefined || score >= 0, `the node scores us ${score}`);
    check('gossip.our_score', score ?? null);
  } finally {
    await node.stop();
  }
}

async function main() {
  checkVectors(args.doc, check);
  if (args['vectors-only']) return;
  for (const a of ['addr', 'http', 'key', 'to', 'amount']) {
    expect(args[a], `--${a} is required (see the top of peer.js)`);
  }
  deadline = Date.now() + Number(args.timeout) * 1000;
  const addr = multiaddr(args.addr);
  const peerText = addr.getPeerId();
  expect(peerText, `${args.addr} has no /p2p/ PeerId`);

  // The chain, from a node we trust (the doc: GET /status answers genesis_hash).
  const st = await getJson('/status');
  expect(st.peer_id === peerText, `the node's /status peer_id ${st.peer_id} is not ${peerText}`);
  const chain = { chain_id: st.chain_id, genesis_hash: st.genesis_hash };
  check('http.status', chain);
  const validators = new Map((await getJson('/validators'))
    .filter((v) => v.in_set).map((v) => [v.account, BigInt(v.power)]));
  expect(validators.size > 0, 'GET /validators lists no validator in the set');

  const peer = peerIdFromString(peerText);
  await wrongGenesisIsRefused(addr, peer, chain);
  await member(addr, peer, chain, validators);
}

main().then(() => process.exit(0), (err) => {
  process.stderr.write(`conformance: FAILED: ${err instanceof CheckFailed ? err.message : err.stack}\n`);
  process.exit(1);
});
