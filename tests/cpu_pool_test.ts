/**
 * The CPU backend's two-thread split (src/backend/cpu/pool.ts) of attention, cross-entropy,
 * SwiGLU and AdamW at sizes above the split threshold gives bitwise the results of the one-thread
 * kernels (each element is computed by the same code, only on another thread).
 * Tolerance: exact (bitwise equal).
 */
import { deepStrictEqual, ok } from "node:assert";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { adamwStep } from "../src/backend/cpu/adamw.ts";
import { crossEntropy, swigluBackward, swigluForward } from "../src/backend/cpu/layers.ts";
import { CpuPool } from "../src/backend/cpu/pool.ts";
import { attentionBackward, attentionForward } from "../src/backend/cpu/attention.ts";
import { Gemm } from "../src/backend/cpu/gemm.ts";
import { Scratch } from "../src/backend/cpu/scratch.ts";
import { openBlas } from "../ffi/openblas.ts";
import { lcgFloats } from "./_lcg.ts";

const pooled = navigator.hardwareConcurrency > 1 && Deno.env.get("TUNE_CPU_THREADS") !== "1";

Deno.test("CpuPool.get() starts a worker on a multi-core host", () => {
  ok(!pooled || CpuPool.get() !== null, "pool starts");
});

Deno.test("crossEntropy() split across two threads equals the one-thread kernel bitwise", () => {
  const be = new CpuBackend();
  const N = 70, V = 32768; // N*V >= 2^21 logits: split
  const x = lcgFloats(N * V, 7, 8);
  const tg = new Int32Array(N).map((_, i) => (i % 9 === 4 ? -100 : (i * 7919) % V));
  const logits = be.alloc(N * V), losses = be.alloc(N), targets = be.alloc(N, "i32");
  be.upload(logits, x);
  be.upload(targets, tg);
  be.crossEntropy(losses, logits, logits, targets, N, V, 1 / 61);
  const refL = new Float32Array(N), refD = x.slice();
  crossEntropy(refL, refD, refD, tg, N, V, 1 / 61);
  deepStrictEqual(be.download(losses), refL);
  deepStrictEqual(be.download(logits), refD);
});

Deno.test("swigluForward()/swigluBackward() split across two threads equal one thread bitwise", () => {
  const be = new CpuBackend();
  const n = (1 << 18) + 3; // odd: uneven halves
  const g = lcgFloats(n, 1, 6), u = lcgFloats(n, 2, 2), d = lcgFloats(n, 3, 1);
  const bg = be.alloc(n), bu = be.alloc(n), bd = be.alloc(n), out = be.alloc(n);
  be.upload(bg, g);
  be.upload(bu, u);
  be.upload(bd, d);
  be.swigluForward(out, bg, bu, n);
  const ref = new Float32Array(n);
  swigluForward(ref, g, u, n);
  deepStrictEqual(be.download(out), ref);
  be.swigluBackward(bg, bu, bd, bg, bu, n); // in place, as the model does
  const rg = g.slice(), ru = u.slice();
  swigluBackward(rg, ru, d, rg, ru, n);
  deepStrictEqual(be.download(bg), rg);
  deepStrictEqual(be.download(bu), ru);
});

Deno.test("adamw() split across two threads equals the one-thread step bitwise", () => {
  const be = new CpuBackend();
  const n = (1 << 18) + 5;
  const p = lcgFloats(n, 11, 1), g = lcgFloats(n, 12, 0.1), m = lcgFloats(n, 13, 0.01);
  const v = lcgFloats(n, 14, 0.001).map(Math.abs);
  const bp = be.alloc(n), bg = be.alloc(n), bm = be.alloc(n), bv = be.alloc(n);
  be.upload(bp, p);
  be.upload(bg, g);
  be.upload(bm, m);
  be.upload(bv, v);
  const hp = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 3 };
  be.adamw(bp, bg, bm, bv, hp);
  adamwStep(p, g, m, v, hp);
  deepStrictEqual(be.download(bp), p);
  deepStrictEqual(be.download(bm), m);
  deepStrictEqual(be.download(bv), v);
});

for (const variant of [null, { window: 37, softcap: 2, scale: 0.4 }]) {
  Deno.test(`attentionForward()/attentionBackward() split across two threads equal one thread bitwise (variant ${JSON.stringify(variant)})`, () => {
    const be = new CpuBackend();
    const B = 2, T = 256, NH = 8, NKV = 4, HS = 8; // B*NH*T*T = 2^20 scores: split
    const nq = B * T * NH * HS, nkv = B * T * NKV * HS;
    const hq = lcgFloats(nq, 21, 1), hk = lcgFloats(nkv, 22, 1), hv = lcgFloats(nkv, 23, 1);
    const hdo = lcgFloats(nq, 24, 1);
    const up = (h: Float32Array) => {
      const b = be.alloc(h.length);
      be.upload(b, h);
      return b;
    };
    const q = up(hq), k = up(hk), v = up(hv), dout = up(hdo);
    const out = be.alloc(nq), lse = be.alloc(B * NH * T);
    const dq = be.alloc(nq), dk = be.alloc(nkv), dv = be.alloc(nkv);
    be.attentionForward(out, lse, q, k, v, B, T, T, T, NH, NKV, HS, null, variant);
    be.attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, B, T, NH, NKV, HS, null, variant);
    const one = new CpuBackend();
    const d = { B, T, Tk: T, Tcap: T, NH, NKV, HS, ...(variant ?? {}) };
    const rOut = new Float32Array(nq), rLse = new Float32Array(B * NH * T);
    const gemm = new Gemm(one.matmulPath === "blas" ? openBlas() : null, new Scratch());
    attentionForward(gemm, rOut, rLse, hq, hk, hv, d, new Float32Array(64 * T));
    const rdq = new Float32Array(nq), rdk = new Float32Array(nkv), rdv = new Float32Array(nkv);
    attentionBackward(
      gemm,
      rdq,
      rdk,
      rdv,
      hdo,
      hq,
      hk,
      hv,
      rOut,
      rLse,
      d,
      new Float32Array(64 * T),
      new Float32Array(64 * T),
    );
    deepStrictEqual(be.download(out), rOut);
    deepStrictEqual(be.download(lse), rLse);
    deepStrictEqual(be.download(dq), rdq);
    deepStrictEqual(be.download(dk), rdk);
    deepStrictEqual(be.download(dv), rdv);
  });
}
