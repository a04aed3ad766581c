/**
 * Packed batches carry segment ids (one per sample of a pack, from seqLens; extra padding
 * its own) and per-sample positions, which `packingOf()` hands to the model; unpacked
 * batches carry neither. Exact integer comparisons.
 */
import { deepStrictEqual } from "node:assert";
import { collatePadded, packSamples, type Sample } from "../src/data/mod.ts";
import { packingOf } from "../src/training/data.ts";

const sample = (n: number, base: number): Sample => ({
  tokens: Int32Array.from({ length: n }, (_, i) => base + i),
  labels: Int32Array.from({ length: n }, (_, i) => (i === n - 1 ? -100 : base + i + 1)),
});

Deno.test("`collatePadded()` gives packs segment ids from seqLens and keeps inputPos", () => {
  const packs = packSamples([sample(3, 10), sample(2, 20), sample(4, 30)], {
    maxSeqLen: 6,
    padId: 0,
  });
  // pack 0: samples of 3 and 2 tokens + 1 padding; pack 1: 4 tokens + 2 padding
  const b = collatePadded(packs, { padId: 0, padTo: 7 });
  deepStrictEqual(Array.from(b.segments!), [0, 0, 0, 1, 1, 2, 3, 0, 0, 0, 0, 1, 1, 2]);
  deepStrictEqual(Array.from(b.inputPos!), [0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6]);
  const opts = packingOf(b);
  deepStrictEqual(opts.segments, b.segments);
  deepStrictEqual(opts.positions, b.inputPos);
});

Deno.test("`packingOf()` gives no packing for an unpacked batch", () => {
  const b = collatePadded([sample(3, 10), sample(5, 20)], { padId: 0 });
  deepStrictEqual(b.segments, undefined);
  deepStrictEqual(packingOf(b), { segments: null, positions: null });
});
