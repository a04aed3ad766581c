/**
 * `fastExp()` (the polynomial exp behind the CPU softmax, cross-entropy and SiLU loops)
 * against Math.exp. Tolerance: relative error below 1e-8 (the module's stated bound) over
 * the range where exp(x) is a normal float64 (below -708 it is subnormal, far below fp32),
 * and exact results at the ends (0, Infinity, NaN).
 */
import { ok, strictEqual } from "node:assert";
import { fastExp } from "../src/backend/cpu/fast_math.ts";

Deno.test("fastExp() is within 1e-8 relative of Math.exp on [-708, 709] (normal results)", () => {
  let worst = 0, at = 0;
  let s = 12345;
  for (let i = 0; i < 200_000; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    // half the samples in the softmax range [-40, 0], half over the whole finite range
    const x = i % 2 === 0 ? -40 * (s / 4294967296) : -708 + 1417 * (s / 4294967296);
    const want = Math.exp(x);
    const rel = Math.abs(fastExp(x) - want) / want;
    if (rel > worst) [worst, at] = [rel, x];
  }
  console.log(`worst relative error ${worst.toExponential(2)} at x = ${at}`);
  ok(worst < 1e-8, `relative error ${worst} at x = ${at}`);
});

Deno.test("fastExp() gives exp(0) = 1 and 0, Infinity, NaN at the ends", () => {
  strictEqual(fastExp(0), 1);
  strictEqual(fastExp(-Infinity), 0);
  strictEqual(fastExp(-800), 0);
  strictEqual(fastExp(710), Infinity);
  strictEqual(fastExp(Infinity), Infinity);
  ok(Number.isNaN(fastExp(NaN)));
});
