/** Host-side bf16 <-> f32 conversion for uploads and downloads. */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** bf16 bits of `x`, rounded to nearest even (NaN stays a quiet NaN). */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7fffffff) > 0x7f800000) return ((b >>> 16) | 0x40) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** dst(n) = bf16 bits of src(n). */
export function encodeBf16(dst: Uint16Array, src: ArrayLike<number>): void {
  const n = src.length;
  const tmp = new Float32Array(src as ArrayLike<number>);
  const bits = new Uint32Array(tmp.buffer);
  for (let i = 0; i < n; i++) {
    const b = bits[i];
    dst[i] = (b & 0x7fffffff) > 0x7f800000
      ? ((b >>> 16) | 0x40) & 0xffff
      : ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
  }
}

/** dst(n) = the f32 values of bf16 bits src(n) (exact). */
export function decodeBf16(dst: Float32Array, src: Uint16Array): void {
  const bits = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
}
