/**
 * attentionForward() with its scores in wasm memory (the exps of each row's even head in
 * wasm SIMD, `attn_exp_row`) gives bitwise the output and log-sum-exp of the TypeScript loop,
 * on both matmul paths: scores spread so that exp arguments reach the subnormal range and
 * below -745.2, a NaN input row, odd and even row lengths, GQA and a KV-cache decode shape.
 * attentionBackward() with P and dP in wasm memory (`attn_bwd_row`) gives bitwise the loop's
 * dq, dk and dv the same way, packed segments included.
 */
import { strictEqual } from "node:assert";
import { openBlas } from "../ffi/openblas.ts";
import { attentionBackward, attentionForward, attnExpRange } from "../src/backend/cpu/attention.ts";
import { Gemm } from "../src/backend/cpu/gemm.ts";
import { Scratch } from "../src/backend/cpu/scratch.ts";
import { simdKernels } from "../src/backend/cpu/simd.ts";
import { assertSameBits, lcgFloats } from "./_lcg.ts";

const ignore = Deno.env.get("TUNE_CPU_SIMD") === "0";
const cases = [
  { B: 2, T: 70, Tk: 70, NH: 4, NKV: 2, HS: 16, scale: 40 }, // wide scores: exp far below 0
  { B: 1, T: 33, Tk: 33, NH: 2, NKV: 2, HS: 8, scale: 3 },
  { B: 2, T: 1, Tk: 45, NH: 4, NKV: 1, HS: 32, scale: 60 }, // decode against a cache
];

const backwardCases = [
  { B: 2, T: 70, NH: 4, NKV: 2, HS: 16, scale: 40, seg: false }, // wide scores: P far below 1
  { B: 1, T: 33, NH: 2, NKV: 2, HS: 8, scale: 3, seg: false },
  { B: 2, T: 130, NH: 2, NKV: 1, HS: 8, scale: 2, seg: true }, // three blocks, packed samples
];

for (const matmul of ["blas", "ts"] as const) {
  Deno.test(
    `attentionForward() exps in wasm SIMD give the loop's bits (${matmul})`,
    { ignore },
    () => {
      const simd = simdKernels()!;
      for (const c of cases) {
        const d = { B: c.B, T: c.T, Tk: c.Tk, Tcap: c.Tk, NH: c.NH, NKV: c.NKV, HS: c.HS };
        const q = lcgFloats(c.B * c.T * c.NH * c.HS, 1, c.scale);
        const k = lcgFloats(c.B * c.Tk * c.NKV * c.HS, 2, c.scale);
        const v = lcgFloats(c.B * c.Tk * c.NKV * c.HS, 3, 1);
        q[5] = NaN; // a NaN score row
        const outs = [0, 1].map((inWasm) => {
          const gemm = new Gemm(matmul === "blas" ? openBlas() : null, new Scratch());
          const out = new Float32Array(q.length), lse = new Float32Array(c.B * c.NH * c.T);
          const n = Math.min(c.T, 64) * c.Tk;
          const s = inWasm ? simd.attnScratch(n) : new Float32Array(n);
          attentionForward(gemm, out, lse, q, k, v, d, s);
          return { out, lse };
        });
        assertSameBits(`out ${JSON.stringify(c)}`, outs[1].out, outs[0].out);
        assertSameBits(`lse ${JSON.stringify(c)}`, outs[1].lse, outs[0].lse);
      }
    },
  );
  Deno.test(
    `attentionBackward() recompute in wasm SIMD gives the loop's bits (${matmul})`,
    { ignore },
    () => {
      const simd = simdKernels()!;
      for (const c of backwardCases) {
        const seg = c.seg
          ? Int32Array.from({ length: c.B * c.T }, (_, i) => (i % c.T < 50 ? 0 : 1))
          : null;
        const d = { B: c.B, T: c.T, Tk: c.T, Tcap: c.T, NH: c.NH, NKV: c.NKV, HS: c.HS, seg };
        const nq = c.B * c.T * c.NH * c.HS, nkv = c.B * c.T * c.NKV * c.HS;
        const q = lcgFloats(nq, 1, c.scale),
          k = lcgFloats(nkv, 2, c.scale),
          v = lcgFloats(nkv, 3, 1);
        const dout = lcgFloats(nq, 4, 1);
        q[5] = NaN; // a NaN score row
        dout[c.HS * c.NH + 3] = Infinity; // an infinite D
        const gemm = new Gemm(matmul === "blas" ? openBlas() : null, new Scratch());
        const out = new Float32Array(nq), lse = new Float32Array(c.B * c.NH * c.T);
        const n = Math.min(c.T, 64) * c.T;
        attentionForward(gemm, out, lse, q, k, v, d, new Float32Array(n));
        const grads = [0, 1].map((inWasm) => {
          const [p, dp] = inWasm
            ? simd.attnBackwardScratch(n)
            : [new Float32Array(n), new Float32Array(n)];
          const g = {
            dq: new Float32Array(nq),
            dk: new Float32Array(nkv),
            dv: new Float32Array(nkv),
          };
          attentionBackward(gemm, g.dq, g.dk, g.dv, dout, q, k, v, out, lse, d, p, dp);
          return g;
        });
        for (const key of ["dq", "dk", "dv"] as const) {
          assertSameBits(`${key} ${JSON.stringify(c)}`, grads[1][key], grads[0][key]);
        }
      }
    },
  );
}

Deno.test("attn_exp_row reproduces the loop's exp from -746 to 0 (subnormals, POW2's zero)", {
  ignore,
}, () => {
  const simd = simdKernels()!;
  const n = 4000;
  const s = simd.attnScratch(n);
  const x = new Float32Array(n).map((_, i) => -746 + (746 * i) / n); // scale 1, max 0
  x[7] = NaN;
  x[9] = -Infinity;
  s.set(x);
  const sum = simd.attnExpRow(0, n, 1, 0);
  const ref = x.slice(); // the loop of attention.ts
  const rsum = attnExpRange(ref, 0, n - 1, 1, 0);
  assertSameBits("exp", s.subarray(0, n), ref);
  strictEqual(Object.is(sum, rsum), true, `sum ${sum} vs ${rsum}`);
});

Deno.test("attn_bwd_row reproduces the loop's P and dS from -746 to 0 (NaN, infinities)", {
  ignore,
}, () => {
  const simd = simdKernels()!;
  const n = 4000, scale = 0.25, l = -3, D = 0.375;
  const [p, dp] = simd.attnBackwardScratch(n + 2);
  const x = new Float32Array(n).map((_, i) => (-743 + (743 * i) / n) / scale); // y from -746
  const g = new Float32Array(n).map((_, i) => Math.sin(i) * 4);
  x[7] = NaN;
  x[9] = -Infinity;
  g[11] = NaN;
  g[13] = Infinity;
  g[15] = -Infinity;
  g[n - 1] = D; // dP - D = 0
  p.set(x, 2);
  dp.set(g, 2);
  simd.attnBwdRow(p, dp, 2, n, scale, l, D); // at an offset into both
  const refP = x.slice(), refDp = g.slice(); // the TypeScript loop of attention.ts
  attnExpRange(refP, 0, n - 1, scale, l, 0, refDp, D);
  assertSameBits("P", p.subarray(2, n + 2), refP);
  assertSameBits("dS", dp.subarray(2, n + 2), refDp);
});
