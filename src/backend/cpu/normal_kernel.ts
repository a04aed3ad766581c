/**
 * The bulk of `SeededRandom.fillNormal` (params/random.ts) in wasm SIMD (kernels.ll
 * `normal_pairs`, split over two threads by normal_fill.ts): the same sfc32 draws and
 * Box-Muller pairs, four pairs at a time, with log, sin and cos as fdlibm computes them
 * (within 1 ulp of Math's: measured over 2M arguments each when this was written). An output is
 * kept only where every float64 within 256 ulps of it rounds to the same fp32 (not near an fp32
 * halfway point, inside fp32's normal range), so Math's value, a few ulps away at most, rounds
 * there too; the rest (the eight outputs of about one iteration in 10^5) come back to
 * `fillPairs`, which recomputes them with Math. The outputs are therefore bitwise those of the
 * scalar loop (tests/random_test.ts compares them over 2^21 outputs and at scales where Math
 * decides most of them).
 */
import { kernelModule } from "./simd.ts";

/** normal_pairs' constants in kernels.ll order (each fills both lanes of one v128). */
const NORMAL_TABLE = [
  Math.SQRT2,
  0.5,
  1,
  2,
  // fdlibm e_log.c's Lg1..Lg7
  6.666666666666735130e-01,
  3.999999999940941908e-01,
  2.857142874366239149e-01,
  2.222219843214978396e-01,
  1.818357216161805012e-01,
  1.531383769920937332e-01,
  1.479819860511658591e-01,
  6.93147180369123816490e-01, // ln 2, high part (n * it exact)
  1.90821492927058770002e-10, // ln 2, low part
  2 ** 52 + 1055, // 2^52 + exponent bias + 32: the double of bits 2^52 + E, less this, is E - 1055
  -2,
  2 ** -32,
  2 * Math.PI,
  6.36619772367581382433e-01, // 2 / pi
  1.5 * 2 ** 52, // adding and subtracting it rounds to an integer
  // pi / 2 in three parts (the first 33 bits, the next 33, the rest)
  1.57079632673412561417e+00,
  6.07710050630396597660e-11,
  2.02226624879595063154e-21,
  // fdlibm k_sin.c's S1..S6, then k_cos.c's C1..C6
  -1.66666666666666324348e-01,
  8.33333333332248946124e-03,
  -1.98412698298579493134e-04,
  2.75573137070700676789e-06,
  -2.50507602534068634195e-08,
  1.58969099521155010221e-10,
  4.16666666666666019037e-02,
  -1.38888888888741095749e-03,
  2.48015872894767294178e-05,
  -2.75573143513906633035e-07,
  2.08757232129817482790e-09,
  -1.13596475577881948265e-11,
];
/**
 * Then the int64 constants (raw bits): the mantissa mask, 2^52's bits, 1; for the fp32 rounding
 * (f32_unsure, f32_bits): the low 29 bits' mask, their halfway point 2^28, margin - 2^28 and
 * 2 margin (the margin in ulps), the bits of 2^-126 and 2^127 (fp32's normal range, short of
 * overflow), the magnitude mask, and the exponent rebias (1023 - 127) << 23.
 */
const MARGIN_ULPS = 256n;
const NORMAL_TABLE_BITS = [
  0x000fffffffffffffn,
  0x4330000000000000n,
  1n,
  (1n << 29n) - 1n,
  1n << 28n,
  MARGIN_ULPS - (1n << 28n),
  2n * MARGIN_ULPS,
  897n << 52n,
  1150n << 52n,
  0x7fffffffffffffffn,
  896n << 23n,
];

/** Pairs per kernel call: 64 KB of fp32 output in the wasm memory. */
const CHUNK_PAIRS = 8192;
const PAGE = 65536;
const STATE_AT = 0;
const TABLE_AT = 16;
const OUT_AT = TABLE_AT + (NORMAL_TABLE.length + NORMAL_TABLE_BITS.length) * 16;
/** Fallback records: at most one (9 int32s) per iteration of four pairs. */
const FALLBACK_AT = OUT_AT + CHUNK_PAIRS * 8;
const RECORD = 9;
const BYTES = FALLBACK_AT + (CHUNK_PAIRS / 4) * RECORD * 4;

type SkipPairs = (state: number, npairs: number) => void;
type NormalPairs = (
  state: number,
  out: number,
  npairs: number,
  std: number,
  table: number,
  fallback: number,
) => number;

/** One instance of normal_pairs with its own small wasm memory. */
export class NormalKernel {
  static #shared: NormalKernel | null | undefined;
  #fn: NormalPairs;
  #skip: SkipPairs;
  #i32: Int32Array;
  #f32: Float32Array;

  private constructor(module: WebAssembly.Module) {
    const mem = new WebAssembly.Memory({ initial: Math.ceil(BYTES / PAGE) });
    const inst = new WebAssembly.Instance(module, { env: { __linear_memory: mem } });
    this.#fn = inst.exports.normal_pairs as NormalPairs;
    this.#skip = inst.exports.sfc32_skip as SkipPairs;
    this.#i32 = new Int32Array(mem.buffer);
    this.#f32 = new Float32Array(mem.buffer);
    const f64 = new Float64Array(mem.buffer, TABLE_AT, NORMAL_TABLE.length * 2);
    NORMAL_TABLE.forEach((c, i) => f64[2 * i] = f64[2 * i + 1] = c);
    const bits = new BigInt64Array(
      mem.buffer,
      TABLE_AT + NORMAL_TABLE.length * 16,
      NORMAL_TABLE_BITS.length * 2,
    );
    NORMAL_TABLE_BITS.forEach((c, i) => bits[2 * i] = bits[2 * i + 1] = c);
  }

  /** This thread's kernel, or null without wasm SIMD or with `TUNE_CPU_SIMD=0`. */
  static get(): NormalKernel | null {
    if (NormalKernel.#shared === undefined) {
      const module = kernelModule();
      NormalKernel.#shared = module ? new NormalKernel(module) : null;
    }
    return NormalKernel.#shared;
  }

  /**
   * out[at, at + 2 npairs) = the next `npairs` Box-Muller pairs times `std` (npairs a multiple of
   * 4), as fillNormal's loop computes them; `state` (sfc32's a, b, c, d) is advanced in place.
   */
  fillPairs(state: Int32Array, out: Float32Array, at: number, npairs: number, std: number): void {
    const i32 = this.#i32, f32 = this.#f32;
    i32.set(state, STATE_AT >> 2);
    for (let done = 0; done < npairs; done += CHUNK_PAIRS) {
      const m = Math.min(CHUNK_PAIRS, npairs - done);
      const records = this.#fn(STATE_AT, OUT_AT, m, std, TABLE_AT, FALLBACK_AT);
      for (let r = 0; r < records; r++) {
        const rec = (FALLBACK_AT >> 2) + RECORD * r;
        const el = (OUT_AT >> 2) + i32[rec];
        for (let p = 0; p < 4; p++) {
          exactPair(f32, el + 2 * p, i32[rec + 1 + 2 * p] >>> 0, i32[rec + 2 + 2 * p] >>> 0, std);
        }
      }
      out.set(f32.subarray(OUT_AT >> 2, (OUT_AT >> 2) + 2 * m), at + 2 * done);
    }
    state.set(i32.subarray(STATE_AT >> 2, (STATE_AT >> 2) + 4));
  }

  /** Advance `state` past the draws of `npairs` pairs, as `fillPairs` would (no outputs). */
  skipPairs(state: Int32Array, npairs: number): void {
    const i32 = this.#i32;
    i32.set(state, STATE_AT >> 2);
    this.#skip(STATE_AT, npairs);
    state.set(i32.subarray(STATE_AT >> 2, (STATE_AT >> 2) + 4));
  }
}

/** dst[el], dst[el + 1] = one pair exactly as SeededRandom.normal computes it (times std). */
function exactPair(dst: Float32Array, el: number, tu: number, tv: number, std: number): void {
  const r = Math.sqrt(-2 * Math.log(tu / 4294967296));
  const angle = 2 * Math.PI * (tv / 4294967296);
  dst[el] = std * (r * Math.cos(angle));
  dst[el + 1] = std * (r * Math.sin(angle));
}
