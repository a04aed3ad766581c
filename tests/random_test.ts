/**
 * SeededRandom: `fillNormal` (the wasm kernel for runs of 64 pairs and more, the loop for the
 * rest) gives bitwise the numbers of `std * normal()` drawn one at a time, for odd and even
 * lengths with the Box-Muller spare carried between calls and across interleaved uniform()
 * draws, over 2^21 outputs and at scales where the kernel hands most outputs back to Math
 * (fp32 subnormals, overflow), and split over two threads for shared memory; a pinned value
 * keeps the stream fixed.
 */
import { deepStrictEqual, strictEqual } from "node:assert/strict";
import { SeededRandom } from "../src/params/random.ts";

Deno.test("fillNormal() equals std * normal() element by element, spare carried", () => {
  const fast = new SeededRandom(1234), slow = new SeededRandom(1234);
  const sizes = [[7, 0.02], [1, 1], [10, 0.5], [0, 1], [1001, 0.003], [2, 2], [259, 1]];
  // 2^21 + 1 outputs: several kernel chunks (8192 pairs each) and the odd spare
  for (const [n, std] of [...sizes, [(1 << 21) + 1, 0.02], [100_001, 1]]) {
    const a = fast.fillNormal(new Float32Array(n), std);
    const b = new Float32Array(n);
    for (let i = 0; i < n; i++) b[i] = std * slow.normal();
    deepStrictEqual(a, b);
    strictEqual(fast.uniform(), slow.uniform()); // same generator state afterwards
  }
});

Deno.test("fillNormal() equals std * normal() where fp32 rounding is unsure (Math decides)", () => {
  // 3e-39: every output an fp32 subnormal (all recomputed with Math); 1e38: some overflow
  // to Infinity; 1.5e-38: outputs on both sides of the smallest normal
  for (const std of [3e-39, 1e38, 1.5e-38]) {
    const fast = new SeededRandom(99), slow = new SeededRandom(99);
    const n = 4099;
    const a = fast.fillNormal(new Float32Array(n), std);
    const b = new Float32Array(n);
    for (let i = 0; i < n; i++) b[i] = std * slow.normal();
    deepStrictEqual(a, b);
    strictEqual(fast.uniform(), slow.uniform());
  }
});

Deno.test("fillNormal() into shared memory (split over two threads) gives the same numbers", () => {
  // 2^17 + 2^15 + 3 outputs: past SPLIT_MIN_PAIRS, an odd tail, the spare carried in and out
  const n = (1 << 17) + (1 << 15) + 3;
  const split = new SeededRandom(5), one = new SeededRandom(5);
  split.fillNormal(new Float32Array(1), 1); // leaves a spare
  one.fillNormal(new Float32Array(1), 1);
  const a = split.fillNormal(new Float32Array(new SharedArrayBuffer(n * 4)), 0.02);
  const b = one.fillNormal(new Float32Array(n), 0.02);
  deepStrictEqual(a, b);
  strictEqual(split.normal(), one.normal()); // the spare and the state afterwards
  strictEqual(split.uniform(), one.uniform());
});

Deno.test("fillNormal() keeps the pinned stream of seed 7", () => {
  const out = new SeededRandom(7).fillNormal(new Float32Array(3), 0.02);
  // values of the first implementation (Box-Muller over sfc32), pinned
  deepStrictEqual(Array.from(out), [
    -0.023226318880915642,
    0.0277080237865448,
    0.006513744592666626,
  ]);
});
