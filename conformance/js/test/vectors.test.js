// The doc's test vectors and the decoder's limits, without a network: `npm test`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as c from '../src/crucible.js';
import { DecodeError, Reader } from '../src/postcard.js';
import { checkVectors } from '../src/vectors.js';

const DOC = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'docs',
  'protocol.md');

test('every vector of docs/protocol.md is rebuilt or decoded', () => {
  const checks = [];
  checkVectors(DOC, (what) => checks.push(what));
  assert.ok(checks.includes('vector.transfer.signature'));
  assert.ok(checks.includes('vectors'));
});

test('varints follow the doc', () => {
  assert.equal(new Reader(Uint8Array.from([0xe8, 0x07])).u64(), 1000n);
  const lax = new Reader(Uint8Array.from([0x80, 0x00]));
  assert.equal(lax.u64(), 0n);
  assert.equal(lax.nonMinimal, 1);
  assert.throws(() => new Reader(Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0x1f])).u32(),
    DecodeError);
  assert.throws(() => new Reader(new Uint8Array(11).fill(0x80)).u64(), DecodeError);
  assert.equal(new Reader(Uint8Array.from([0x03])).i64(), -2n);
});

test('a length over the bytes left fails before anything is allocated', () => {
  // A Vec<SignedTx> claiming 2^40 items in 11 bytes.
  const huge = Uint8Array.from([0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0, 0, 0, 0, 0]);
  assert.throws(() => c.decodeAll('batch', huge, c.txBatch), /length/);
  assert.throws(() => new Reader(Uint8Array.from([0x05, 0x61])).string(), /length/);
  assert.throws(() => c.decodeAll('status', Uint8Array.from([0x00, 0x01]), c.status), DecodeError);
});

test('trailing bytes and bad tags are refused', () => {
  const ok = c.encodeStatus({ chain_id: 'a', genesis_hash: '00'.repeat(32) });
  assert.throws(() => c.decodeAll('status', Buffer.concat([ok, Buffer.from([0])]), c.status),
    /trailing/);
  assert.throws(() => c.decodeAll('answer', Uint8Array.from([2]), c.statusResponse), /variant/);
  assert.throws(() => c.blobResponse(Uint8Array.from([1, 0])), DecodeError);
  assert.throws(() => c.blobResponse(Uint8Array.from([0, 0, 0])), DecodeError);
  assert.throws(() => c.blobResponse(new Uint8Array(0)), DecodeError);
});
