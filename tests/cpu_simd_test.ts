/**
 * The wasm SIMD kernels (src/backend/cpu/simd.ts) against the scalar loops of
 * `crossEntropy()`, `swigluForward()` and `swigluBackward()`. Tolerance: bitwise (the
 * kernels repeat the scalar float64 operations in the same order), including NaN and
 * infinite inputs, exp arguments beyond the normal range, ignored rows, odd lengths,
 * several chunks, and outputs aliasing inputs.
 */
import { ok } from "node:assert";
import { crossEntropy, swigluBackward, swigluForward } from "../src/backend/cpu/layers.ts";
import { setSimd, simdKernels } from "../src/backend/cpu/simd.ts";
import { assertSameBits, lcgFloats } from "./_lcg.ts";

function run(simd: boolean, logits: Float32Array, t: Int32Array, V: number, alias: boolean) {
  setSimd(simd);
  try {
    const x = logits.slice();
    const dl = alias ? x : new Float32Array(x.length);
    const losses = new Float32Array(t.length);
    crossEntropy(losses, dl, x, t, t.length, V, 1 / t.length);
    return { losses, dl };
  } finally {
    setSimd(true);
  }
}

/** With TUNE_CPU_SIMD=0 the kernels are off, and there is nothing to compare. */
const ignore = Deno.env.get("TUNE_CPU_SIMD") === "0";

Deno.test("crossEntropy() gives the scalar loop's bits with the wasm SIMD rows", { ignore }, () => {
  ok(simdKernels() !== null, "wasm SIMD is available in Deno");
  for (const [V, alias] of [[32000, false], [1001, true], [7, false], [2, true]] as const) {
    const N = 6;
    const x = lcgFloats(N * V, V, 20);
    x[1] = NaN; // row 0 is all NaN
    x[V + 1] = -Infinity;
    if (V > 4) x[2 * V + 3] = -1000; // below -708 after the max
    const t = Int32Array.from({ length: N }, (_, i) => (i * 977) % V);
    t[4] = -100;
    const a = run(false, x, t, V, alias), b = run(true, x, t, V, alias);
    assertSameBits(`V=${V} losses`, a.losses, b.losses);
    assertSameBits(`V=${V} dlogits`, a.dl, b.dl);
    ok(Number.isNaN(b.losses[0]) && Number.isFinite(b.losses[5]), `V=${V}: NaN row, finite rows`);
  }
});

Deno.test("swigluForward() and swigluBackward() give the scalar loops' bits with wasm SIMD", {
  ignore,
}, () => {
  for (const n of [10_001, 8192, 2, 1]) {
    const gate = lcgFloats(n, n, 30), up = lcgFloats(n, n + 1, 2), dout = lcgFloats(n, n + 2, 1);
    const special = [NaN, Infinity, -Infinity, 800, -800, 709, -709, 745, -745.5, 0, -0];
    special.forEach((x, i) => {
      if (i < n) gate[i] = x;
    });
    const both = (simd: boolean) => {
      setSimd(simd);
      try {
        const out = new Float32Array(n);
        swigluForward(out, gate, up, n);
        const dg = gate.slice(), du = up.slice(); // aliasing, as the model does
        swigluBackward(dg, du, dout, dg, du, n);
        return { out, dg, du };
      } finally {
        setSimd(true);
      }
    };
    const a = both(false), b = both(true);
    assertSameBits(`n=${n} out`, a.out, b.out);
    assertSameBits(`n=${n} dgate`, a.dg, b.dg);
    assertSameBits(`n=${n} dup`, a.du, b.du);
  }
});
