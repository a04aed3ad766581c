/**
 * The wasm SIMD cross-entropy rows (src/backend/cpu/simd_softmax.ts) against the scalar
 * loop of `crossEntropy()`. Tolerance: bitwise (the kernels repeat the scalar float64
 * operations in the same order), losses and gradients, including NaN and -Infinity logits,
 * ignored rows, odd vocabulary sizes and dlogits aliasing the logits.
 */
import { ok, strictEqual } from "node:assert";
import { crossEntropy } from "../src/backend/cpu/layers.ts";
import { setSoftmaxSimd, softmaxRows } from "../src/backend/cpu/simd_softmax.ts";

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
  setSoftmaxSimd(simd);
  try {
    const x = logits.slice();
    const dl = alias ? x : new Float32Array(x.length);
    const losses = new Float32Array(t.length);
    crossEntropy(losses, dl, x, t, t.length, V, 1 / t.length);
    return { losses, dl };
  } finally {
    setSoftmaxSimd(true);
  }
}

function sameBits(label: string, a: Float32Array, b: Float32Array): void {
  strictEqual(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) throw new Error(`${label}[${i}]: ${a[i]} vs ${b[i]}`);
  }
}

Deno.test("crossEntropy() gives the scalar loop's bits with the wasm SIMD rows", () => {
  ok(softmaxRows() !== null, "wasm SIMD is available in Deno");
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
