/**
 * Conversions between fp32 host data and the 16-bit float formats checkpoints hold.
 * bf16 -> fp32 and f16 -> fp32 are exact; fp32 -> bf16/f16 round to nearest even.
 */

/** Storage dtypes tune reads and writes. */
export type FileDtype = "f32" | "bf16" | "f16";

/** Bytes per element of a dtype. */
export function dtypeBytes(dtype: FileDtype): number {
  return dtype === "f32" ? 4 : 2;
}

/** Decode little-endian raw bytes of `dtype` into fp32. */
export function decodeToF32(bytes: Uint8Array, dtype: FileDtype): Float32Array {
  if (dtype === "f32") {
    // Copy into an aligned buffer (the bytes may sit at any offset).
    const out = new Float32Array(bytes.length / 4);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
  const n = bytes.length / 2;
  const out = new Float32Array(n);
  if (dtype === "bf16") {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = (bytes[2 * i] | (bytes[2 * i + 1] << 8)) << 16;
    return out;
  }
  for (let i = 0; i < n; i++) out[i] = f16ToF32(bytes[2 * i] | (bytes[2 * i + 1] << 8));
  return out;
}

/** Encode fp32 values as little-endian raw bytes of `dtype`. */
export function encodeFromF32(data: Float32Array, dtype: FileDtype): Uint8Array {
  if (dtype === "f32") {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  const out = new Uint8Array(data.length * 2);
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  for (let i = 0; i < data.length; i++) {
    const h = dtype === "bf16" ? f32BitsToBf16(bits[i]) : f32ToF16(data[i]);
    out[2 * i] = h & 0xff;
    out[2 * i + 1] = h >>> 8;
  }
  return out;
}

/** fp32 bit pattern -> bf16 bit pattern, round to nearest even, NaN kept quiet. */
export function f32BitsToBf16(x: number): number {
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff;
  const rounded = x + 0x7fff + ((x >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

const f16Scratch = new Float32Array(1);
const f16Bits = new Uint32Array(f16Scratch.buffer);

/** IEEE half bit pattern -> number. */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** number -> IEEE half bit pattern, round to nearest even. */
export function f32ToF16(v: number): number {
  f16Scratch[0] = v;
  const x = f16Bits[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let h = mant >>> shift;
    if (rest > half || (rest === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++;
  e = h >>> 10;
  return sign | (e >= 31 ? 0x7c00 : h);
}
