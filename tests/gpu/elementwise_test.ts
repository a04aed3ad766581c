/**
 * GPU checks, elementwise ops, reductions and dropout (kernels/elementwise.cu): each op of the CUDA
 * backend against the CPU backend (the numerical oracle) at the tolerances of _harness.ts. Runs
 * under `deno test` when a GPU is present and from scripts/gpu_check.ts (a GPU session, or the
 * kernel emulator with --small).
 */
import { roundArrayBf16 } from "../../src/backend/cpu/buffer.ts";
import {
  check,
  cmp,
  cmpArrays,
  cpu,
  EXACT,
  F32_EW,
  gpu,
  gpuTest,
  type Outcome,
  pair,
  randn,
  sz,
  tolFor,
  zeros,
} from "./_harness.ts";

export function elementwiseChecks(): void {
  for (const dt of ["f32", "bf16"] as const) {
    const n = sz(1000003, 2003);
    check(`add/mul/axpy/scale [${dt}]`, () => {
      const a = pair(randn(n), dt), b = pair(randn(n), dt), o = zeros(n, dt);
      const out: Outcome[] = [];
      cpu.add(o.c, a.c, b.c);
      gpu.add(o.g, a.g, b.g);
      out.push(cmp("add", o, tolFor(dt, F32_EW)));
      cpu.mul(a.c, a.c, b.c); // out aliases a
      gpu.mul(a.g, a.g, b.g);
      out.push(cmp("mul (out=a)", a, tolFor(dt, F32_EW)));
      cpu.axpy(o.c, b.c, -0.37);
      gpu.axpy(o.g, b.g, -0.37);
      out.push(cmp("axpy", o, tolFor(dt, F32_EW)));
      cpu.scale(o.c, 1.7);
      gpu.scale(o.g, 1.7);
      out.push(cmp("scale", o, tolFor(dt, F32_EW)));
      return out;
    });
    check(`sum/sumSquares [${dt}]`, () => {
      const m = sz(10_000_019, 70_019);
      const x = pair(randn(m), dt);
      const host = cpu.download(x.c);
      let abs = 0;
      for (const v of host) abs += Math.abs(v);
      const out: Outcome[] = [];
      const s = [gpu.sum(x.g)], r = [cpu.sum(x.c)];
      out.push(cmpArrays("sum", s, r, { atol: 1e-6 * abs, rtol: 0 }));
      const q = [gpu.sumSquares(x.g)], rq = [cpu.sumSquares(x.c)];
      out.push(cmpArrays("sumSquares", q, rq, { atol: 0, rtol: 1e-5 }));
      // Integers below 2^24 add exactly in fp32: a missed or doubled element shows.
      gpu.fill(x.g, 1);
      out.push(
        cmpArrays("sum of ones (exact)", [gpu.sum(x.g), gpu.sumSquares(x.g)], [m, m], EXACT),
      );
      return out;
    });
    check(`dropoutMask [${dt}]`, () => {
      const m = sz(1 << 20, 5000) + 7;
      const out: Outcome[] = [];
      for (const [p, seed] of [[0.1, 1234567], [0.5, 2 ** 33 + 5], [0, 3]] as const) {
        const k = zeros(m, dt);
        cpu.dropoutMask(k.c, p, seed);
        gpu.dropoutMask(k.g, p, seed);
        const want = cpu.download(k.c) as Float32Array;
        if (dt === "bf16") roundArrayBf16(want, want.slice());
        out.push(cmpArrays(`p=${p} seed=${seed}`, gpu.download(k.g), want, EXACT));
      }
      return out;
    });
  }
}

gpuTest("elementwise ops, reductions and dropout (kernels/elementwise.cu)", elementwiseChecks);
