/**
 * bitsandbytes' blockwise 8-bit dynamic quantization, as its 8-bit optimizers keep their
 * state: each block of 256 values is scaled by its absmax (an absmax of 0 counts as 1) and
 * every scaled value becomes the index of the nearest entry (the first on ties) of a 256-entry
 * dynamic map: signed for the first moment, unsigned for the second.
 *
 * The dynamic map (bitsandbytes' create_dynamic_map, 7 exponent bits, 8 bits in all): for
 * exponent i = 0..6, 2^i (signed) or 2^(i+1) (unsigned) fraction steps, the midpoints of
 * linspace(0.1, 1) over them, times 10^(i - 6), both signs when signed; then 0 and 1; sorted.
 * Every step is fp32 as torch computes it on the CPU.
 */

/** Values per absmax block of the optimizer state (bitsandbytes' blocksize for optimizers). */
export const BLOCK8 = 256;

/**
 * torch.linspace(start, end, steps) in fp32 as torch's CPU kernel computes it (bitsandbytes
 * builds its maps on the CPU): each value is start + step * i (i < steps / 2) or
 * end - step * (steps - 1 - i) with one rounding (the compiler fuses the multiply-add),
 * except that runs of 16 go as two 8-lane vectors whose lanes are base + step * j, rounded
 * twice. Checked against torch for every size the maps use.
 */
function linspaceF32(start: number, end: number, steps: number): Float32Array {
  const s = Math.fround(start), e = Math.fround(end);
  const step = Math.fround((e - s) / (steps - 1));
  const half = Math.floor(steps / 2);
  const at = (i: number) => Math.fround(i < half ? s + step * i : e - step * (steps - i - 1));
  const out = new Float32Array(steps);
  let i = 0;
  for (; i + 16 <= steps; i += 16) {
    for (let v = i; v < i + 16; v += 8) {
      const base = at(v);
      for (let j = 0; j < 8; j++) out[v + j] = base + Math.fround(step * j);
    }
  }
  for (; i < steps; i++) out[i] = at(i);
  return out;
}

/** bitsandbytes' create_dynamic_map(signed) with max_exponent_bits 7, total_bits 8. */
export function dynamicMap(signed: boolean): Float32Array {
  const data: number[] = [];
  const maxExp = 7, nonSign = 7;
  for (let i = 0; i < maxExp; i++) {
    const items = signed ? 2 ** (i + nonSign - maxExp) + 1 : 2 ** (i + nonSign - maxExp + 1) + 1;
    const b = linspaceF32(0.1, 1, items);
    const scale = Math.fround(10 ** (-(maxExp - 1) + i));
    for (let k = 0; k + 1 < items; k++) {
      const mean = Math.fround(Math.fround(b[k] + b[k + 1]) / 2);
      data.push(Math.fround(scale * mean));
      if (signed) data.push(Math.fround(-scale * mean));
    }
  }
  data.push(0, 1);
  while (data.length < 256) data.push(0);
  return Float32Array.from(data.sort((a, b) => a - b));
}

/** The signed (first moment) and unsigned (second moment) maps. */
export const SIGNED_MAP = dynamicMap(true);
export const UNSIGNED_MAP = dynamicMap(false);

/** Index of the map entry nearest `x` (first on ties) by binary search over the sorted map. */
function nearest(map: Float32Array, x: number): number {
  let lo = 0, hi = map.length - 1;
  if (x <= map[0]) return 0;
  if (x >= map[hi]) return hi;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (map[mid] <= x) lo = mid;
    else hi = mid;
  }
  // map[lo] <= x < map[hi]; the first minimal |x - map[k]| (equal entries: the first of them)
  const dist = (k: number) => Math.abs(Math.fround(x - map[k]));
  let k = dist(hi) < dist(lo) ? hi : lo;
  // torch's argmin keeps the first of equal fp32 distances
  while (k > 0 && dist(k - 1) === dist(k)) k--;
  return k;
}

/**
 * Quantize x(n) into codes(n) and absmax(ceil(n / 256)) with `map`: per block, absmax of |x|
 * (1 when 0), codes = nearest map entry of x / absmax.
 */
export function quantizeBlockwise(
  x: Float32Array,
  map: Float32Array,
  codes: Uint8Array,
  absmax: Float32Array,
): void {
  blockMaxima(x, 0, absmax);
  for (let b = 0; b < absmax.length; b++) absmax[b] = absmaxOf(absmax[b]);
  encodeBlockwise(x, 0, map, absmax, codes);
}

/**
 * A piece of a tensor: elements [first, first + x.length) of it, its 256-value blocks counted
 * from the tensor's element 0 (a sharded optimizer's slice; the whole tensor when first = 0).
 * out(b) = max |x| over the piece's part of its b-th block (0 when all are 0; NaN propagates).
 */
export function blockMaxima(x: Float32Array, first: number, out: Float32Array): void {
  const b0 = Math.floor(first / BLOCK8);
  for (let b = 0; b < out.length; b++) {
    const i0 = Math.max(0, (b0 + b) * BLOCK8 - first);
    const i1 = Math.min(x.length, (b0 + b + 1) * BLOCK8 - first);
    let m = 0;
    for (let i = i0; i < i1; i++) m = Math.max(m, Math.abs(x[i]));
    out[b] = m;
  }
}

/** A block's absmax from the max |x| over the whole block (bitsandbytes takes 0 as 1). */
export function absmaxOf(max: number): number {
  return max === 0 ? 1 : max;
}

/**
 * codes(i) = nearest map entry of x(i) / absmax of its block, for a piece of a tensor
 * starting at its element `first` (see `blockMaxima`; absmax(0) is the piece's first block).
 */
export function encodeBlockwise(
  x: Float32Array,
  first: number,
  map: Float32Array,
  absmax: Float32Array,
  codes: Uint8Array,
): void {
  const b0 = Math.floor(first / BLOCK8);
  for (let i = 0; i < x.length; i++) {
    const m = absmax[Math.floor((first + i) / BLOCK8) - b0];
    codes[i] = nearest(map, Math.fround(x[i] / m));
  }
}

/** out(n) = map[codes] * absmax of each block (fp32), for a piece starting at element `first`. */
export function dequantizeBlockwise(
  codes: Uint8Array,
  absmax: Float32Array,
  map: Float32Array,
  out: Float32Array,
  first = 0,
): void {
  const b0 = Math.floor(first / BLOCK8);
  for (let i = 0; i < out.length; i++) {
    out[i] = map[codes[i]] * absmax[Math.floor((first + i) / BLOCK8) - b0];
  }
}
