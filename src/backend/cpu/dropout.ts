/**
 * The counter-based dropout generator shared by every backend.
 *
 * Exact definition (all arithmetic on unsigned 32-bit integers, wrapping mod 2^32):
 *
 *   mix32(x):  x ^= x >> 16;  x *= 0x7feb352d;  x ^= x >> 15;  x *= 0x846ca68b;  x ^= x >> 16
 *   key      = mix32(seed_lo32 ^ 0x9e3779b9)          seed_lo32 = seed mod 2^32
 *   r(i)     = mix32(mix32(i ^ key) + key)            i = element index in the mask (< 2^32)
 *   thresh   = floor(p * 2^32)                         0 <= p < 1
 *   mask[i]  = r(i) < thresh ? 0 : fp32(1 / (1 - p))
 *
 * `mix32` is Chris Wellons' "lowbias32" integer hash (a bijection on 32-bit words). The
 * scale 1/(1-p) is computed in double precision and rounded once to fp32. A CUDA kernel
 * reproduces the mask with the same unsigned 32-bit operations (multiplies wrap).
 */

/** lowbias32 integer hash of a 32-bit word. */
export function mix32(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  return x;
}

/** The per-mask key derived from a seed (low 32 bits of the seed are used). */
export function dropoutKey(seed: number): number {
  // `% 2^32` on a non-negative integer keeps seeds above 2^32 well defined.
  const lo = seed >= 0 ? seed % 4294967296 : 4294967296 + (seed % 4294967296);
  return mix32((lo ^ 0x9e3779b9) >>> 0);
}

/** The random 32-bit word for element i under `key`. */
export function dropoutBits(key: number, i: number): number {
  return mix32((mix32((i ^ key) >>> 0) + key) >>> 0);
}

/** Fill mask(n) with 0 (probability p) or 1/(1-p), as defined in this module's docs. */
export function dropoutFill(mask: Float32Array, p: number, seed: number): void {
  const key = dropoutKey(seed);
  const thresh = Math.floor(p * 4294967296);
  const keep = Math.fround(1 / (1 - p));
  const n = mask.length;
  for (let i = 0; i < n; i++) {
    mask[i] = dropoutBits(key, i) < thresh ? 0 : keep;
  }
}
