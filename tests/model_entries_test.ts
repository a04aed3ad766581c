/**
 * The model's one training entry `trainStep(batch, head)` and one eval entry `evalLosses`
 * on a whole (one-process) model run the same op list as the synchronous entries, with the
 * group hooks a no-op: losses, per-sequence losses and gradients bitwise equal to
 * `lossAndBackward`, `weightedLossAndBackward`, `loss` and `sequenceLosses`; `adapters: false`
 * is the frozen base (`withAdaptersDisabled`).
 */
import assert from "node:assert/strict";
import { loadFixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { createLlama, crossEntropyHead, preferenceHead } from "../src/models/llama/model.ts";
import type { LoraConfig } from "../src/models/model_spec.ts";
import { fixtureConfig, prefixedStateDict } from "./_model_helpers.ts";

const LORA: LoraConfig = {
  attnModules: ["q_proj", "v_proj"],
  applyToMlp: true,
  applyToOutput: false,
  rank: 4,
  alpha: 8,
  dropout: 0.1,
};

function models(lora: LoraConfig | null) {
  const fx = loadFixture("model_tiny_a");
  const be = new CpuBackend();
  const B = fx.meta<number>("B"), T = fx.meta<number>("T");
  const spec = { name: "t", config: fixtureConfig(fx), lora };
  const make = () => {
    const m = createLlama(be, spec, { batch: B, seqLen: T, seed: 3 });
    m.loadStateDict(prefixedStateDict(fx, "w."));
    const sd = m.stateDict();
    for (const [n, t] of sd) {
      if (n.includes("lora_b")) t.data.forEach((_, i) => t.data[i] = Math.sin(i) * 0.05);
    }
    m.loadStateDict(sd);
    return m;
  };
  const tokens = Int32Array.from({ length: B * T }, (_, i) => (i * 5 + 1) % 32);
  const targets = Int32Array.from({ length: B * T }, (_, i) => i % 7 === 0 ? -100 : (i * 3) % 32);
  return { be, a: make(), b: make(), tokens, targets, B };
}

for (const lora of [null, LORA]) {
  Deno.test(`trainStep() equals lossAndBackward() bitwise over two micro-batches (${lora ? "LoRA with dropout" : "full"})`, async () => {
    const { be, a, b, tokens, targets } = models(lora);
    a.zeroGrad();
    b.zeroGrad();
    for (let i = 0; i < 2; i++) {
      const want = a.lossAndBackward(tokens, targets, 0.25);
      const got = await b.trainStep({ tokens, targets }, crossEntropyHead(0.25));
      assert.deepEqual(got, want);
    }
    assert.equal(b.dropoutStep, a.dropoutStep);
    assert.deepEqual(be.download(b.trainable.grads!), be.download(a.trainable.grads!));
    a.free();
    b.free();
  });
}

Deno.test("trainStep() with preferenceHead equals weightedLossAndBackward() bitwise", async () => {
  const { be, a, b, tokens, targets, B } = models(LORA);
  const weigh = (s: Float64Array) => Float64Array.from(s, (x, i) => (i % 2 ? -0.5 : 1) / (1 + x));
  a.zeroGrad();
  b.zeroGrad();
  const want = a.weightedLossAndBackward(tokens, targets, weigh);
  const got = await b.trainStep({ tokens, targets }, preferenceHead(weigh));
  assert.deepEqual(got, want);
  assert.equal(got.weights.length, B);
  assert.deepEqual(be.download(b.trainable.grads!), be.download(a.trainable.grads!));
  a.free();
  b.free();
});

Deno.test("evalLosses() equals loss() and sequenceLosses(); adapters: false equals withAdaptersDisabled()", async () => {
  const { a, tokens, targets } = models(LORA);
  const got = await a.evalLosses({ tokens, targets });
  assert.deepEqual({ lossSum: got.lossSum, tokens: got.tokens }, a.loss(tokens, targets));
  assert.deepEqual(got.seqLoss, a.sequenceLosses(tokens, targets));
  const base = await a.evalLosses({ tokens, targets }, { adapters: false });
  const want = a.withAdaptersDisabled(() => a.sequenceLosses(tokens, targets));
  assert.deepEqual(base.seqLoss, want);
  assert.notDeepEqual(base.seqLoss, got.seqLoss); // the adapters change the losses
  // the adapters are back on afterwards
  assert.deepEqual((await a.evalLosses({ tokens, targets })).seqLoss, got.seqLoss);
  a.free();
});
