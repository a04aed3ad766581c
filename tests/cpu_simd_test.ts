/**
 * The wasm SIMD kernels (src/backend/cpu/simd.ts) against the scalar loops of
 * `crossEntropy()`, `swigluForward()` and `swigluBackward()`. Tolerance: bitwise (the
 * kernels repeat the scalar float64 operations in the same order), including NaN and
 * infinite inputs, exp arguments beyond the normal range, ignored rows, odd lengths,
 * several chunks, and outputs aliasing inputs.
 */
import { ok, strictEqual } from "node:assert";
import { crossEntropy, swigluBackward, swigluForward } from "../src/backend/cpu/layers.ts";
import { setSimd, simdKernels } from "../src/backend/cpu/simd.ts";

function rand(n: number, seed: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2147483648 - 1) * scale;
  }
  return out;
}

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

function sameBits(label: string, a: Float32Array, b: Float32Array): void {
  strictEqual(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) throw new Error(`${label}[${i}]: ${a[i]} vs ${b[i]}`);
  }
}

Deno.test("crossEntropy() gives the scalar loop's bits with the wasm SIMD rows", { ignore }, () => {
  ok(simdKernels() !== null, "wasm SIMD is available in Deno");
  for (const [V, alias] of [[32000, false], [1001, true], [7, false], [2, true]] as const) {
    const N = 6;
    const x = rand(N * V, V, 20);
    x[1] = NaN; // row 0 is all NaN
    x[V + 1] = -Infinity;
    if (V > 4) x[2 * V + 3] = -1000; // below -708 after the max
    const t = Int32Array.from({ length: N }, (_, i) => (i * 977) % V);
    t[4] = -100;
    const a = run(false, x, t, V, alias), b = run(true, x, t, V, alias);
    sameBits(`V=${V} losses`, a.losses, b.losses);
    sameBits(`V=${V} dlogits`, a.dl, b.dl);
    ok(Number.isNaN(b.losses[0]) && Number.isFinite(b.losses[5]), `V=${V}: NaN row, finite rows`);
  }
});

Deno.test("swigluForward() and swigluBackward() give the scalar loops' bits with wasm SIMD", {
  ignore,
}, () => {
  for (const n of [10_001, 8192, 2, 1]) {
    const gate = rand(n, n, 30), up = rand(n, n + 1, 2), dout = rand(n, n + 2, 1);
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
    sameBits(`n=${n} out`, a.out, b.out);
    sameBits(`n=${n} dgate`, a.dg, b.dg);
    sameBits(`n=${n} dup`, a.du, b.du);
  }
});
