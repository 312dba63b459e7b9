// postcard 1.x, as docs/protocol.md "Canonical encoding" describes it: unsigned LEB128 varints,
// zigzag for signed integers, enums as a varint variant index, Option as 00/01, String and Vec
// with a varint length, fixed arrays and structs with none. Written from the doc alone.
//
// Every length read from the input is checked against the bytes that are left before anything
// is allocated, so a hostile length fails at once instead of allocating.

/** A decoding error: the input is not a well-formed value of the expected type. */
export class DecodeError extends Error {}

const U64_MAX = (1n << 64n) - 1n;

/** Reads postcard values from a byte array, front to back. */
export class Reader {
  /** @param {Uint8Array} bytes */
  constructor(bytes) {
    this.bytes = bytes;
    this.pos = 0;
    /** How many varints were not minimal (the doc: accepted, but never written by a node). */
    this.nonMinimal = 0;
  }

  /** Bytes not read yet. */
  remaining() {
    return this.bytes.length - this.pos;
  }

  /** Fails unless every byte was read (the doc: no trailing bytes). */
  end(what) {
    if (this.remaining() !== 0) {
      throw new DecodeError(`${what}: ${this.remaining()} trailing bytes`);
    }
  }

  u8() {
    if (this.remaining() < 1) throw new DecodeError('unexpected end of input');
    return this.bytes[this.pos++];
  }

  /** `n` raw bytes (a fixed array: no length on the wire). */
  fixed(n) {
    if (this.remaining() < n) {
      throw new DecodeError(`${n} bytes wanted, ${this.remaining()} left`);
    }
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** An unsigned varint of at most `maxBytes` bytes and `bits` bits, as a BigInt. */
  varint(maxBytes, bits) {
    let value = 0n;
    for (let i = 0; i < maxBytes; i++) {
      const byte = this.u8();
      value |= BigInt(byte & 0x7f) << BigInt(7 * i);
      if ((byte & 0x80) === 0) {
        if (byte === 0 && i > 0) this.nonMinimal++;
        if (value >> BigInt(bits) !== 0n) {
          throw new DecodeError(`varint over ${bits} bits`);
        }
        return value;
      }
    }
    throw new DecodeError(`varint longer than ${maxBytes} bytes`);
  }

  /** u64 as a BigInt (amounts, heights and nonces can pass 2^53). */
  u64() {
    return this.varint(10, 64);
  }

  /** u32 as a Number. */
  u32() {
    return Number(this.varint(5, 32));
  }

  u16() {
    return Number(this.varint(3, 16));
  }

  /** i64 as a BigInt: zigzag, then varint. */
  i64() {
    const z = this.u64();
    return (z >> 1n) ^ -(z & 1n);
  }

  f32() {
    const b = this.fixed(4);
    return new DataView(b.buffer, b.byteOffset, 4).getFloat32(0, true);
  }

  bool() {
    const b = this.u8();
    if (b > 1) throw new DecodeError(`bool byte ${b}`);
    return b === 1;
  }

  /** An enum's variant index, checked against the number of variants. */
  variant(count, what) {
    const v = this.u32();
    if (v >= count) throw new DecodeError(`${what}: variant ${v} of ${count}`);
    return v;
  }

  /** A length (usize) for items of at least `minItemBytes` each, checked against the input. */
  length(minItemBytes, what) {
    const n = this.u64();
    if (n * BigInt(minItemBytes) > BigInt(this.remaining())) {
      throw new DecodeError(`${what}: length ${n} over the ${this.remaining()} bytes left`);
    }
    return Number(n);
  }

  string(maxBytes = Infinity) {
    const n = this.length(1, 'string');
    if (n > maxBytes) throw new DecodeError(`string of ${n} bytes over ${maxBytes}`);
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(this.fixed(n));
    } catch (err) {
      if (err instanceof DecodeError) throw err;
      throw new DecodeError('string is not UTF-8');
    }
  }

  /** Option<T>: 00 None, 01 Some(T). */
  option(readItem) {
    const tag = this.u8();
    if (tag === 0) return null;
    if (tag === 1) return readItem(this);
    throw new DecodeError(`Option tag ${tag}`);
  }

  /** Vec<T>; every item takes at least `minItemBytes` bytes. */
  vec(readItem, minItemBytes = 1, maxItems = Infinity) {
    const n = this.length(minItemBytes, 'Vec');
    if (n > maxItems) throw new DecodeError(`Vec of ${n} items over ${maxItems}`);
    const out = [];
    for (let i = 0; i < n; i++) out.push(readItem(this));
    return out;
  }
}

/** Writes postcard values; `bytes()` gives the result. */
export class Writer {
  constructor() {
    this.parts = [];
  }

  raw(bytes) {
    this.parts.push(Uint8Array.from(bytes));
    return this;
  }

  u8(n) {
    return this.raw([n]);
  }

  /** An unsigned varint of a Number or BigInt, minimal (what postcard writes). */
  varint(n) {
    let v = BigInt(n);
    if (v < 0n || v > U64_MAX) throw new RangeError(`varint ${v} out of range`);
    const out = [];
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v !== 0n) byte |= 0x80;
      out.push(byte);
    } while (v !== 0n);
    return this.raw(out);
  }

  string(s) {
    const b = new TextEncoder().encode(s);
    return this.varint(b.length).raw(b);
  }

  option(value, writeItem) {
    if (value === null || value === undefined) return this.u8(0);
    this.u8(1);
    writeItem(this, value);
    return this;
  }

  bytes() {
    return Buffer.concat(this.parts);
  }
}

/** Lowercase hex of bytes. */
export const hex = (bytes) => Buffer.from(bytes).toString('hex');

/** Bytes of lowercase or uppercase hex; fails on anything else. */
export function fromHex(s) {
  if (!/^([0-9a-fA-F]{2})*$/.test(s)) throw new Error(`not hex: ${s.slice(0, 80)}`);
  return Uint8Array.from(Buffer.from(s, 'hex'));
}
