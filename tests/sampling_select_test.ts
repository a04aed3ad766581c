/**
 * kthLargest() (the top-k pivot of sampling, by selection) returns exactly the value a full
 * ascending sort puts at n - k: on ties, infinities, signed zeros (equal as numbers: the
 * pivot is only compared with <) and NaN (sort fallback). And top_p, which sorts only a prefix
 * of the ids, gives bitwise the distribution of sorting them all.
 */
import { ok } from "node:assert/strict";
import { kthLargest, samplingDistribution } from "../src/generation/sampling.ts";

Deno.test("kthLargest() equals the sorted array's element n - k", () => {
  let s = 1;
  const r = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  const kinds = [
    () => Math.floor(r() * 5), // many ties
    () => r() - 0.5,
    () => (r() < 0.2 ? -Infinity : r() < 0.1 ? -0 : r() < 0.1 ? 0 : r()),
    () => (r() < 0.01 ? NaN : r()),
  ];
  for (let trial = 0; trial < 2000; trial++) {
    const n = 1 + Math.floor(r() * 300);
    const x = new Float64Array(n).map(kinds[trial % kinds.length]);
    for (const k of [1, n, 1 + Math.floor(r() * n)]) {
      const want = Float64Array.from(x).sort()[n - k];
      const got = kthLargest(x, k);
      ok(want === got || Object.is(want, got), `n ${n} k ${k}: ${got} instead of ${want}`);
    }
  }
});

/** The top-p filter as a full sort of every id writes it (the reference for nucleus()). */
function topPByFullSort(probs: Float64Array, p: number): Float64Array {
  const out = probs.slice();
  const order = Array.from({ length: out.length }, (_, i) => i).filter((i) => out[i] > 0);
  order.sort((a, b) => out[b] - out[a] || a - b);
  let mass = 0, kept = 0;
  for (const i of order) {
    if (mass >= p) out[i] = 0;
    else {
      mass += out[i];
      kept += out[i];
    }
  }
  for (let i = 0; i < out.length; i++) out[i] /= kept;
  return out;
}

Deno.test("top_p sorts only a prefix of the ids yet gives the full sort's distribution bitwise", () => {
  let s = 7;
  const r = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32;
  // flat (the prefix grows several times), peaked, and tied logits; with and without top_k
  const kinds = [
    () => (r() - 0.5) * 4,
    (i: number) => -1.5 * Math.log(1 + ((i * 7919) % 5003)),
    () => Math.floor(r() * 3),
  ];
  for (let trial = 0; trial < 24; trial++) {
    const V = trial % 2 ? 5003 : 300 + Math.floor(r() * 4000);
    const logits = Float32Array.from({ length: V }, (_, i) => kinds[trial % 3](i));
    const topP = [0.5, 0.9, 0.99, 0.999][trial % 4];
    const topK = trial % 5 === 0 ? 1500 : null;
    const base = samplingDistribution(logits, { temperature: 0.7, topK, topP: null }).slice();
    const want = topPByFullSort(base, topP);
    const got = samplingDistribution(logits, { temperature: 0.7, topK, topP });
    ok(got.every((x, i) => Object.is(x, want[i])), `trial ${trial}: V ${V} top_p ${topP}`);
  }
});
