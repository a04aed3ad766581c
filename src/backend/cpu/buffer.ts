/** Host memory buffers of the CPU backend. */
import type { DeviceBuffer, DType } from "../ops.ts";

/**
 * A CPU buffer: a Float32Array (f32 and bf16) or Int32Array (i32). bf16 buffers hold
 * values rounded to bfloat16 precision in fp32 storage, so CPU compute stays fp32.
 */
export class CpuBuffer implements DeviceBuffer {
  constructor(
    readonly dtype: DType,
    /** The elements; a subarray of the parent's storage for views. */
    readonly data: Float32Array | Int32Array,
    /** True for live buffers made by `alloc` (counted in bytesInUse); false once freed. */
    public owned: boolean,
  ) {}
  get length(): number {
    return this.data.length;
  }
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Round an fp32 value to the nearest bfloat16 (ties to even), returned as fp32. */
export function roundBf16(x: number): number {
  f32Scratch[0] = x;
  const u = u32Scratch[0];
  if ((u & 0x7f800000) === 0x7f800000) {
    // Inf stays Inf; NaN keeps a quiet NaN.
    u32Scratch[0] = (u & 0x7fffff) !== 0 ? (u | 0x400000) & 0xffff0000 : u & 0xffff0000;
    return f32Scratch[0];
  }
  u32Scratch[0] = ((u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000) >>> 0;
  return f32Scratch[0];
}

/** dst[i] = roundBf16(src[i]) over the whole of dst (same length). */
export function roundArrayBf16(dst: Float32Array, src: ArrayLike<number>): void {
  const n = dst.length;
  const u = new Uint32Array(dst.buffer, dst.byteOffset, n);
  for (let i = 0; i < n; i++) dst[i] = src[i];
  for (let i = 0; i < n; i++) {
    const x = u[i];
    if ((x & 0x7f800000) === 0x7f800000) {
      u[i] = (x & 0x7fffff) !== 0 ? (x | 0x400000) & 0xffff0000 : x & 0xffff0000;
    } else {
      u[i] = ((x + 0x7fff + ((x >>> 16) & 1)) & 0xffff0000) >>> 0;
    }
  }
}
