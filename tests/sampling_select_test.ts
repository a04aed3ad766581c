/**
 * kthLargest() (the top-k pivot of sampling, by selection) returns exactly the value a full
 * ascending sort puts at n - k: on ties, infinities, signed zeros (equal as numbers: the
 * pivot is only compared with <) and NaN (sort fallback).
 */
import { ok } from "node:assert/strict";
import { kthLargest } from "../src/generation/sampling.ts";

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
