/**
 * NF4 (4-bit NormalFloat, Dettmers et al. 2023) quantization as torchao's NF4Tensor
 * (`to_nf4(w, block_size=64, scaler_block_size=256)`) does it, bit for bit:
 *
 *   absmax(b)  = max |w| over block b of 64 consecutive elements        (nb = n / 64)
 *   mean       = mean of the absmaxes (fp64 sum, rounded to the dtype: see nf4Quantize)
 *   factor(g)  = 256 / (2 * max |absmax - mean| over group g of 256 blocks)
 *   scaler(b)  = int8(clamp(round_half_even((absmax(b) - mean) * factor(g)), -128, 127))
 *   code(i)    = index of the NF4 level nearest w(i) / absmax(b) (the first one on ties)
 *   dequantized(i) = level(code(i)) * (scaler(b) / factor(g) + mean)
 *
 * Every arithmetic step rounds to the tensor's dtype (fp32, or bf16 for bf16 checkpoints),
 * as torch computes it. Codes are packed two a byte, the first in the high nibble. In memory
 * this costs 4 bits + 8 bits / 64 + 32 bits / 16384 = 4.127 bits (0.516 bytes) a parameter.
 */
import { TuneError } from "../errors.ts";
import { roundBf16 } from "../backend/cpu/buffer.ts";
import { dequantizeNf4, NF4_LEVELS } from "../backend/cpu/nf4.ts";

export { NF4_LEVELS };

/** Elements per absmax block (torchao's block_size). */
export const NF4_BLOCK = 64;
/** Blocks per group of the double-quantized scalers (torchao's scaler_block_size). */
export const NF4_SCALER_BLOCK = 256;
/** A tensor's element count must be a multiple of this (64 * 256). */
export const NF4_MULTIPLE = NF4_BLOCK * NF4_SCALER_BLOCK;

/** Element type the quantizer computes in (the checkpoint tensor's dtype). */
export type Nf4DType = "f32" | "bf16";

/** An NF4 tensor on the host. */
export interface Nf4Host {
  shape: number[];
  dtype: Nf4DType;
  /** (n / 2) two 4-bit codes a byte, element 2k in the high nibble of byte k. */
  codes: Uint8Array;
  /** (n / 64) int8 double-quantized block scalers. */
  scalers: Int8Array;
  /** (n / 16384) per-group quantization factors, in the dtype. */
  factors: Float32Array;
  /** Mean of the block absmaxes, in the dtype. */
  mean: number;
}

/** The rounding of one arithmetic result to `dtype` (torch computes bf16 ops in fp32). */
export function dtypeRound(dtype: Nf4DType): (x: number) => number {
  return dtype === "f32" ? Math.fround : (x) => roundBf16(Math.fround(x));
}

/** The 16 levels in `dtype` (torchao makes its level tensor in the input's dtype). */
export function nf4Levels(dtype: Nf4DType): Float32Array {
  return Float32Array.from(NF4_LEVELS, dtypeRound(dtype));
}

/**
 * Throw torchao's refusal (as a one-line TuneError) when a tensor of `shape` cannot be NF4:
 * more than 2 dims, or an element count that is not a multiple of 64 (block) and of
 * 64 * 256 (scaler groups).
 */
export function checkNf4Shape(name: string, shape: readonly number[]): void {
  const n = shape.reduce((a, b) => a * b, 1);
  const fix = "; use a model whose linear weights have a multiple of 16384 elements, or plain LoRA";
  if (shape.length > 2) {
    throw new TuneError(
      `cannot quantize ${name} to NF4: torchao expects a tensor of at most 2 dims, got ${shape.length}${fix}`,
    );
  }
  if (n % NF4_BLOCK !== 0) {
    throw new TuneError(
      `cannot quantize ${name} [${
        shape.join(", ")
      }] to NF4: its ${n} elements are not a multiple of the block size ${NF4_BLOCK} (torchao's "Input tensor must be divisible by block size")${fix}`,
    );
  }
  if ((n / NF4_BLOCK) % NF4_SCALER_BLOCK !== 0) {
    throw new TuneError(
      `cannot quantize ${name} [${shape.join(", ")}] to NF4: its ${
        n / NF4_BLOCK
      } blocks are not a multiple of the scaler block size ${NF4_SCALER_BLOCK} (torchao's "Number of scalers must be divisible by scaler block size")${fix}`,
    );
  }
}

/** torch.round: half to even. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Quantize `data` (values already representable in `dtype`) of `shape` to NF4 as torchao
 * does. TuneError (torchao's reason) for shapes it refuses.
 */
export function nf4Quantize(
  data: Float32Array,
  shape: readonly number[],
  opts: { dtype?: Nf4DType; name?: string } = {},
): Nf4Host {
  const dtype = opts.dtype ?? "f32";
  checkNf4Shape(opts.name ?? "tensor", shape);
  const r = dtypeRound(dtype);
  const levels = nf4Levels(dtype);
  const n = data.length;
  const nb = n / NF4_BLOCK, ng = nb / NF4_SCALER_BLOCK;
  const absmax = new Float32Array(nb); // (nb)
  let sum = 0;
  for (let b = 0; b < nb; b++) {
    let m = 0;
    for (let i = b * NF4_BLOCK, e = i + NF4_BLOCK; i < e; i++) {
      const a = Math.abs(data[i]);
      if (a > m || a !== a) m = a;
    }
    absmax[b] = m;
    sum += m;
  }
  // torchao's absmax.mean() ends in a last bit that depends on torch's reduction order
  // (vector width, threads, CPU or CUDA); here it is the fp64 mean rounded to the dtype,
  // the same on every backend and within one ulp of torch's
  const mean = r(sum / nb);
  const scalers = new Int8Array(nb);
  const factors = new Float32Array(ng);
  for (let g = 0; g < ng; g++) {
    let gm = 0;
    for (let b = g * NF4_SCALER_BLOCK, e = b + NF4_SCALER_BLOCK; b < e; b++) {
      gm = Math.max(gm, Math.abs(r(absmax[b] - mean)));
    }
    const factor = r(256 / r(2 * gm));
    factors[g] = factor;
    for (let b = g * NF4_SCALER_BLOCK, e = b + NF4_SCALER_BLOCK; b < e; b++) {
      const q = roundHalfEven(r(r(absmax[b] - mean) * factor));
      // NaN (a group whose absmaxes all equal the mean: 0 * inf) casts to 0
      scalers[b] = q !== q ? 0 : Math.min(127, Math.max(-128, q));
    }
  }
  const codes = new Uint8Array(n / 2);
  for (let b = 0; b < nb; b++) {
    const m = absmax[b];
    for (let i = b * NF4_BLOCK, e = i + NF4_BLOCK; i < e; i++) {
      const c = nearestLevel(r(data[i] / m), levels, r);
      codes[i >> 1] |= (i & 1) === 0 ? c << 4 : c;
    }
  }
  return { shape: [...shape], dtype, codes, scalers, factors, mean };
}

/**
 * Index of the level nearest `v` (the first of equal rounded distances, as torch's min; 0 for
 * NaN): a binary search for the two levels around v, then their rounded distances.
 */
function nearestLevel(v: number, levels: Float32Array, r: (x: number) => number): number {
  if (v !== v) return 0;
  let lo = 0, hi = 15;
  if (v <= levels[0]) hi = 1;
  else if (v >= levels[15]) lo = 14;
  else {
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (levels[mid] <= v) lo = mid;
      else hi = mid;
    }
  }
  const d = (k: number) => Math.abs(r(v - levels[k]));
  let k = d(hi) < d(lo) ? hi : lo;
  while (k > 0 && d(k - 1) === d(k)) k--;
  return k;
}

/**
 * Dequantize elements [start, start + count) of `q` into `out` (count): level * block scale,
 * rounded to the dtype (torchao's get_original_weight; the CPU backend's kernel).
 * Default: the whole tensor.
 */
export function nf4Dequantize(
  q: Nf4Host,
  out?: Float32Array,
  start = 0,
  count = q.codes.length * 2 - start,
): Float32Array {
  const o = out ?? new Float32Array(count);
  dequantizeNf4(o, q, start, count);
  return o;
}

/** Bytes an NF4 tensor of n elements takes: codes, int8 scalers, fp32 factors, the mean. */
export function nf4Bytes(n: number): number {
  return n / 2 + n / NF4_BLOCK + (n / NF4_MULTIPLE) * 4 + 4;
}
