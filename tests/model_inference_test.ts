/**
 * Inference-only models (`createLlama(..., { training: false })`): no gradient, optimizer or
 * backward memory, and the same numbers as a training model with the same weights.
 * Tolerance: bitwise (the same op calls on the same weights).
 */
import assert from "node:assert/strict";
import { loadFixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { createLlama } from "../src/models/llama/model.ts";
import type { LoraConfig } from "../src/models/model_spec.ts";
import { fixtureConfig, prefixedStateDict } from "./_model_helpers.ts";

const LORA: LoraConfig = {
  attnModules: ["q_proj", "v_proj", "output_proj"],
  applyToMlp: true,
  applyToOutput: true,
  rank: 4,
  alpha: 8,
  dropout: 0.1,
};

for (const lora of [null, LORA]) {
  const label = lora ? "LoRA" : "full";
  Deno.test(`createLlama() with training false holds no gradients or moments and gives the training model's logits bitwise (${label})`, () => {
    const fx = loadFixture("model_tiny_a");
    const cfg = fixtureConfig(fx);
    const B = fx.meta<number>("B");
    const T = fx.meta<number>("T");
    const be = new CpuBackend();
    const spec = { name: "tiny", config: cfg, lora };
    const train = createLlama(be, spec, { batch: B, seqLen: T, seed: 3 });
    const infer = createLlama(be, spec, { batch: B, seqLen: T, seed: 3, training: false });
    train.loadStateDict(prefixedStateDict(fx, "w."));
    // non-zero adapters so the LoRA path changes the logits
    if (lora) {
      const sd = train.stateDict();
      for (const [n, t] of sd) {
        if (n.includes("lora_b")) t.data.forEach((_, i) => t.data[i] = Math.sin(i + 1) * 0.05);
      }
      train.loadStateDict(sd);
    }
    infer.loadStateDict(train.stateDict());

    const mt = train.memory(), mi = infer.memory();
    console.log(`${label}: training model ${JSON.stringify(mt)}`);
    console.log(`${label}: inference model ${JSON.stringify(mi)}`);
    assert.equal(mi.gradients, 0);
    assert.equal(mi.optimizer, 0);
    assert.equal(mi.parameters, mt.parameters);
    assert.ok(mt.gradients > 0 && mt.optimizer > 0);
    assert.ok(mi.activations < mt.activations, "fewer saved activations");
    assert.ok(mi.scratch < mt.scratch, "no backward scratch");
    assert.equal(infer.trainable.grads, null);
    assert.equal(infer.trainable.m, null);

    const tokens = fx.i32("tokens");
    const targets = fx.i32("targets");
    const lt = be.download(train.forward(tokens)) as Float32Array;
    const li = be.download(infer.forward(tokens)) as Float32Array;
    assert.deepEqual(li, lt, "logits bitwise");
    assert.deepEqual(infer.loss(tokens, targets), train.loss(tokens, targets), "loss bitwise");

    train.setupCaches(1, T);
    infer.setupCaches(1, T);
    const prompt = tokens.subarray(0, T - 1);
    assert.deepEqual(
      be.download(infer.prefill(prompt)),
      be.download(train.prefill(prompt)),
      "prefill logits bitwise",
    );
    const next = Int32Array.of(tokens[T - 1]);
    assert.deepEqual(
      be.download(infer.decodeStep(next)),
      be.download(train.decodeStep(next)),
      "decode logits bitwise",
    );

    assert.throws(() => infer.lossAndBackward(tokens, targets, 1), /training: false/);
    train.free();
    infer.free();
  });
}
