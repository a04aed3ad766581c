/**
 * SeededRandom: `fillNormal` (the fast loop) gives bitwise the numbers of `std * normal()`
 * drawn one at a time, for odd and even lengths with the Box-Muller spare carried between
 * calls and across interleaved uniform() draws; and a pinned value keeps the stream fixed.
 */
import { deepStrictEqual, strictEqual } from "node:assert/strict";
import { SeededRandom } from "../src/params/random.ts";

Deno.test("fillNormal() equals std * normal() element by element, spare carried", () => {
  const fast = new SeededRandom(1234), slow = new SeededRandom(1234);
  for (const [n, std] of [[7, 0.02], [1, 1], [10, 0.5], [0, 1], [1001, 0.003], [2, 2]]) {
    const a = fast.fillNormal(new Float32Array(n), std);
    const b = new Float32Array(n);
    for (let i = 0; i < n; i++) b[i] = std * slow.normal();
    deepStrictEqual(a, b);
    strictEqual(fast.uniform(), slow.uniform()); // same generator state afterwards
  }
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
