// Request-response framing over libp2p streams, as docs/protocol.md "Sync protocol" describes it
// for status, sync and blob alike: one request per stream, the requester writes one frame
// (u32be(len) || body) and closes its write side; the server writes one frame and closes the
// stream. A frame's length is checked against its limit before its body is gathered.

import { frame } from './crucible.js';

/** Milliseconds to wait for a stream to end once its one frame was read. */
const END_MS = 5000;

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Reads one frame of at most `limit` body bytes from a stream's source, then checks that the
 * source ends with nothing after it. Returns the body.
 */
export async function readFrame(source, limit, what, timeoutMs) {
  const it = source[Symbol.asyncIterator]();
  const chunks = [];
  let have = 0;
  let len = null;
  const read = async () => {
    for (;;) {
      if (len === null && have >= 4) {
        len = Buffer.concat(chunks).readUInt32BE(0);
        if (len > limit) throw new Error(`${what}: frame of ${len} bytes over the limit of ${limit}`);
      }
      if (len !== null && have >= 4 + len) break;
      const next = await it.next();
      if (next.done) {
        throw new Error(`${what}: stream ended after ${have} bytes of a frame`
          + (len === null ? '' : ` of ${4 + len}`));
      }
      const bytes = next.value.subarray();
      chunks.push(bytes);
      have += bytes.length;
    }
  };
  await withTimeout(read(), timeoutMs, what);
  const all = Buffer.concat(chunks, have);
  if (all.length > 4 + len) throw new Error(`${what}: ${all.length - 4 - len} bytes after the frame`);
  const end = await withTimeout(it.next(), END_MS, `${what} (the stream's end after the frame)`);
  if (!end.done) throw new Error(`${what}: bytes after the frame`);
  return all.subarray(4);
}

/** Writes one frame and closes the stream's write side. */
export async function writeFrame(stream, body) {
  await stream.sink([frame(body)]);
}

/**
 * One request on a new stream of `protocol` to `peer`: writes `body`, reads one answer frame of at
 * most `limit` bytes. Returns the answer's body.
 */
export async function request(node, peer, protocol, body, limit, timeoutMs) {
  const stream = await node.dialProtocol(peer, protocol, { signal: AbortSignal.timeout(timeoutMs) });
  try {
    await writeFrame(stream, body);
    return await readFrame(stream.source, limit, protocol, timeoutMs);
  } catch (err) {
    stream.abort(err);
    throw err;
  }
}
