/**
 * adamw_step, the wasm SIMD AdamW (src/backend/cpu/simd.ts), against adamw.ts's scalar loop.
 * Tolerance: bitwise (the kernel repeats the loop's float64 operations and fp32 roundings in
 * its order), over several chunks and an odd length, with zero, subnormal, huge, infinite
 * and NaN gradients and moments, weight decay, a first and a late step.
 */
import { ok } from "node:assert";
import { adamwStep } from "../src/backend/cpu/adamw.ts";
import { setSimd, simdKernels } from "../src/backend/cpu/simd.ts";
import { assertSameBits, lcgFloats } from "./_lcg.ts";

/** With TUNE_CPU_SIMD=0 the kernels are off, and there is nothing to compare. */
const ignore = Deno.env.get("TUNE_CPU_SIMD") === "0";

Deno.test("adamwStep() gives the scalar loop's bits with the wasm SIMD kernel", { ignore }, () => {
  ok(simdKernels() !== null, "wasm SIMD is available in Deno");
  const n = 3 * 4096 + 1001; // several chunks, an odd tail
  const p0 = lcgFloats(n, 1, 2), g0 = lcgFloats(n, 2, 1e-3), m0 = lcgFloats(n, 3, 1e-3);
  const v0 = lcgFloats(n, 4, 1e-6).map(Math.abs);
  const special = [0, -0, 1e-45, -3e-39, 3e38, -3e38, Infinity, -Infinity, NaN, 1e-20];
  special.forEach((x, i) => {
    g0[10 + i] = x; // gradients
    m0[40 + i] = x; // first moments
    v0[70 + i] = Math.abs(x); // second moments
    p0[100 + i] = x; // weights
  });
  for (
    const hp of [
      { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 1 },
      { lr: 2e-5, beta1: 0.8, beta2: 0.95, eps: 1e-6, weightDecay: 0, step: 1234 },
    ]
  ) {
    const run = (simd: boolean) => {
      setSimd(simd);
      try {
        const [p, g, m, v] = [p0, g0, m0, v0].map((a) => a.slice());
        for (let s = 0; s < 3; s++) adamwStep(p, g, m, v, { ...hp, step: hp.step + s });
        return { p, m, v };
      } finally {
        setSimd(true);
      }
    };
    const a = run(false), b = run(true);
    assertSameBits(`step ${hp.step} params`, a.p, b.p);
    assertSameBits(`step ${hp.step} m`, a.m, b.m);
    assertSameBits(`step ${hp.step} v`, a.v, b.v);
    ok(a.p.some((x, i) => x !== p0[i]), "the weights moved");
  }
});
