/**
 * The wasm products of decode-sized matrix-vector products (src/backend/cpu/small_gemv.ts,
 * kernels.ll `gemv_rows` / `gemv_cols`) against TypeScript references that round every
 * product and sum to fp32 in the kernels' documented order. Tolerance: bitwise. Shapes with
 * K and N not multiples of 4 or 8, leading dimensions beyond the row, accumulate (beta 1),
 * operands copied in (scratch) or resident (arena), and `Gemm` sending the strided M = 1
 * products (attention over the KV cache) to them.
 */
import { ok, strictEqual } from "node:assert";
import { Gemm } from "../src/backend/cpu/gemm.ts";
import { Scratch } from "../src/backend/cpu/scratch.ts";
import { gemvArena, gemvInWasm, smallGemv } from "../src/backend/cpu/small_gemv.ts";
import { openBlas } from "../ffi/openblas.ts";
import { SeededRandom } from "../src/params/random.ts";

const f = Math.fround;

function rand(n: number, seed: number): Float32Array {
  return new SeededRandom(seed).fillUniform(new Float32Array(n), -1, 1);
}

/** gemv_rows' order: lanes j mod 4 up to K & ~3, (l0 + l1) + (l2 + l3), then the tail. */
function refRows(
  N: number,
  K: number,
  x: Float32Array,
  w: Float32Array,
  ld: number,
  y0: Float32Array,
  beta: number,
) {
  const y = y0.slice();
  const K4 = K & ~3;
  for (let r = 0; r < N; r++) {
    const l = [0, 0, 0, 0];
    for (let j = 0; j < K4; j++) l[j & 3] = f(l[j & 3] + f(x[j] * w[r * ld + j]));
    let s = f(f(l[0] + l[1]) + f(l[2] + l[3]));
    for (let j = K4; j < K; j++) s = f(s + f(x[j] * w[r * ld + j]));
    y[r] = beta === 0 ? s : f(y[r] + s);
  }
  return y;
}

/** gemv_cols' order: each column's products added in j order from 0. */
function refCols(
  N: number,
  K: number,
  x: Float32Array,
  b: Float32Array,
  ld: number,
  y0: Float32Array,
  beta: number,
) {
  const y = y0.slice();
  for (let c = 0; c < N; c++) {
    let s = 0;
    for (let j = 0; j < K; j++) s = f(s + f(x[j] * b[j * ld + c]));
    y[c] = beta === 0 ? s : f(y[c] + s);
  }
  return y;
}

function sameBits(label: string, a: Float32Array, b: Float32Array): void {
  for (let i = 0; i < b.length; i++) {
    ok(Object.is(a[i], b[i]), `${label}: element ${i}: ${a[i]} vs ${b[i]}`);
  }
}

const ignore = smallGemv() === null; // no wasm SIMD (or TUNE_CPU_SIMD=0): nothing to compare

const SHAPES: [number, number, number][] = [ // N, K, extra leading dimension
  [1, 1, 0],
  [3, 5, 0],
  [4, 4, 0],
  [7, 9, 3],
  [8, 64, 0],
  [13, 172, 1],
  [64, 64, 0],
  [512, 64, 0],
  [96, 48, 240],
  [9, 130, 2],
];

Deno.test({
  name: "gemv_rows / gemv_cols give the bits of the fp32 reference sum order (scratch and arena)",
  ignore,
  fn() {
    const s = smallGemv()!;
    let seed = 1;
    for (const [N, K, extra] of SHAPES) {
      for (const beta of [0, 1]) {
        const ldw = K + extra, ldb = N + extra;
        const x = rand(K, seed++), w = rand(N * ldw, seed++), b = rand(K * ldb, seed++);
        const y0 = rand(N, seed++);
        const want = refRows(N, K, x, w, ldw, y0, beta);
        // the reference is a dot product: close to the float64 one
        const d = Array.from({ length: N }, (_, r) => {
          let t = beta === 0 ? 0 : y0[r];
          for (let j = 0; j < K; j++) t += x[j] * w[r * ldw + j];
          return t;
        });
        d.forEach((v, r) => ok(Math.abs(v - want[r]) <= 1e-5 * (K + 1), `reference off at ${r}`));
        const y = y0.slice();
        s.rows(N, K, x, w, ldw, y, beta);
        sameBits(`rows ${N}x${K} beta ${beta}`, y, want);
        const yc = y0.slice();
        s.cols(N, K, x, b, ldb, yc, beta);
        sameBits(`cols ${N}x${K} beta ${beta}`, yc, refCols(N, K, x, b, ldb, y0, beta));
        // resident operands in an arena give the same
        const a = gemvArena((K + N * ldw + K * ldb + 2 * N) * 4 + 256)!;
        const [ax, aw, ab, ay] = [a.alloc(K), a.alloc(N * ldw), a.alloc(K * ldb), a.alloc(N)];
        ax.set(x), aw.set(w), ab.set(b), ay.set(y0);
        a.rows(N, K, ax, aw, ldw, ay, beta);
        sameBits(`arena rows ${N}x${K}`, ay, want);
        ay.set(y0);
        a.cols(N, K, ax, ab, ldb, ay, beta);
        sameBits(`arena cols ${N}x${K}`, ay, yc);
      }
    }
  },
});

Deno.test({
  name: "Gemm.nt and Gemm.nn send strided M = 1 products up to SMALL_GEMV_WASM to the wasm kernels",
  ignore,
  fn() {
    for (const blas of [openBlas(), null]) {
      const g = new Gemm(blas, new Scratch());
      const [N, K] = [96, 48];
      ok(gemvInWasm(N, K, true) && !gemvInWasm(1024, 1024, true));
      const x = rand(K, 5), w = rand(N * 288, 6), y = new Float32Array(N);
      g.nt(1, N, K, x, K, w, 288, y, N, 0);
      sameBits("Gemm.nt", y, refRows(N, K, x, w, 288, new Float32Array(N), 0));
      g.nn(1, N, K, x, K, w, 288, y, N, 0);
      sameBits("Gemm.nn", y, refCols(N, K, x, w, 288, new Float32Array(N), 0));
      strictEqual(y.length, N);
      // dense (weights) stay on OpenBLAS / the TypeScript kernels
      ok(!gemvInWasm(N, K, false));
    }
  },
});
