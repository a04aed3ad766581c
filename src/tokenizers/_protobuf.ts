/** A minimal protobuf wire-format reader, enough for SentencePiece's ModelProto. */

/** One field: number, wire type and value (varint as bigint, length-delimited as bytes, fixed32/64 as bytes). */
export interface WireField {
  field: number;
  wire: number;
  varint?: bigint;
  bytes?: Uint8Array;
}

/** Thrown on malformed input; callers turn it into a TuneError naming the file. */
export class WireError extends Error {}

function readVarint(buf: Uint8Array, pos: number): [bigint, number] {
  let result = 0n;
  let shift = 0n;
  for (let k = 0; k < 10; k++) {
    if (pos >= buf.length) throw new WireError("truncated varint");
    const b = buf[pos++];
    result |= BigInt(b & 0x7f) << shift;
    if (b < 0x80) return [result, pos];
    shift += 7n;
  }
  throw new WireError("varint longer than 10 bytes");
}

/** Every field of one message, in file order. Throws WireError on malformed input. */
export function readFields(buf: Uint8Array): WireField[] {
  const out: WireField[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const [key, p1] = readVarint(buf, pos);
    pos = p1;
    const field = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (field === 0) throw new WireError("field number 0");
    if (wire === 0) {
      const [v, p2] = readVarint(buf, pos);
      pos = p2;
      out.push({ field, wire, varint: v });
    } else if (wire === 2) {
      const [len, p2] = readVarint(buf, pos);
      const end = p2 + Number(len);
      if (len > BigInt(buf.length) || end > buf.length) throw new WireError("truncated field");
      out.push({ field, wire, bytes: buf.subarray(p2, end) });
      pos = end;
    } else if (wire === 5 || wire === 1) {
      const size = wire === 5 ? 4 : 8;
      if (pos + size > buf.length) throw new WireError("truncated fixed field");
      out.push({ field, wire, bytes: buf.subarray(pos, pos + size) });
      pos += size;
    } else {
      throw new WireError(`unsupported wire type ${wire}`);
    }
  }
  return out;
}

/** An int32 field's value (negative values are 10-byte two's complement varints). */
export function asInt32(f: WireField): number {
  return Number(BigInt.asIntN(32, f.varint ?? 0n));
}

/** A float field's value (fixed32, little endian). */
export function asFloat(f: WireField): number {
  const b = f.bytes!;
  return new DataView(b.buffer, b.byteOffset, 4).getFloat32(0, true);
}

const utf8 = new TextDecoder();

/** A string field's value. */
export function asString(f: WireField): string {
  return utf8.decode(f.bytes);
}
