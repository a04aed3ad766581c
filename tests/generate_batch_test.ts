/**
 * Batched generation: B prompts of different lengths at once give, token for token, the
 * greedy continuations of running each prompt alone, with each sequence stopping on its
 * own stop token or length; on aidreams260K through the CPU's fused decoder on both
 * matrix-product paths, and through the op-by-op decode (no fused decoder), with and
 * without the KV cache.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { readLlama2c } from "../src/checkpoint/llama2c.ts";
import { generateTokens } from "../src/generation/mod.ts";
import { createLlama } from "../src/models/llama/model.ts";
import { SeededRandom } from "../src/params/random.ts";

const MODEL_DIR = new URL("./data/models/aidreams260K/", import.meta.url).pathname;

// five prompts of four lengths (BOS first); the third equals the first's start
const PROMPTS = [[1, 400, 300, 27], [1], [1, 400], [1, 77, 9, 150, 42, 301, 5], [1, 250]];

for (
  const [what, matmul, fused, kvCache] of [
    ["fused decoder, OpenBLAS", "blas", true, true],
    ["fused decoder, TypeScript products", "ts", true, true],
    ["op-by-op decode", "blas", false, true],
    ["no KV cache", "blas", true, false],
  ] as const
) {
  Deno.test(`generateTokens() on prompts of different lengths equals one at a time, greedy (${what})`, () => {
    const be = new CpuBackend({ matmul });
    if (!fused) (be as { createDecoder?: unknown }).createDecoder = undefined;
    const m = readLlama2c(MODEL_DIR + "model.bin");
    const model = createLlama(be, { name: "aidreams260K", config: m.config, lora: null }, {
      batch: 1,
      seqLen: 1,
      training: false,
    });
    model.loadStateDict(m.stateDict);
    const run = (prompts: number[][], stopIds: number[]) =>
      generateTokens(model, be, prompts, {
        temperature: 0,
        topK: null,
        topP: null,
        maxNewTokens: 24,
        stopIds,
        rng: new SeededRandom(0),
        kvCache,
      });
    const free = PROMPTS.map((p) => run([p], []).tokens[0]);
    // a stop id that ends some sequences early and at different steps
    const stop = free[0][9];
    const alone = PROMPTS.map((p) => run([p], [stop]));
    const stopped = alone.filter((r) => r.finish[0] === "stop").length;
    assert(stopped >= 1 && stopped < PROMPTS.length, `${stopped} sequences stop`);
    const batch = run(PROMPTS, [stop]);
    assertEquals(batch.tokens, alone.map((r) => r.tokens[0]));
    assertEquals(batch.finish, alone.map((r) => r.finish[0]));
    assertEquals(batch.newTokens, alone.reduce((n, r) => n + r.tokens[0].length, 0));
    model.free();
  });
}
