/**
 * Activation checkpointing recomputes each layer in backward; it must change no gradient
 * (checked bitwise on the CPU backend, which is deterministic) and must lower the
 * activation memory, which the test prints.
 */
import { loadFixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { createLlama } from "../src/models/llama/model.ts";
import { fixtureConfig, maxAbsDiff } from "./_model_helpers.ts";
import { ok as assert } from "node:assert";
import type { ModelSpec } from "../src/models/model_spec.ts";

function gradsWith(spec: ModelSpec, ckpt: boolean, B: number, T: number) {
  const be = new CpuBackend();
  const before = be.bytesInUse();
  const model = createLlama(be, spec, {
    batch: B,
    seqLen: T,
    activationCheckpointing: ckpt,
    seed: 5,
  });
  const held = be.bytesInUse() - before;
  model.initRandom(1234);
  // B (zero at init) gets nonzero values so every adapter path carries gradient
  if (spec.lora) {
    for (const e of model.adapters!.layout.entries) {
      if (e.name.endsWith("lora_b.weight")) {
        const data = new Float32Array(e.length).map((_, i) => Math.sin(i + 1) * 0.1);
        model.adapters!.setTensor(e.name, { shape: e.shape, data });
      }
    }
  }
  const tokens = new Int32Array(B * T).map((_, i) => (i * 7 + 3) % spec.config.vocabSize);
  const targets = new Int32Array(B * T).map((
    _,
    i,
  ) => (i % 5 === 0 ? -100 : (i * 11 + 1) % spec.config.vocabSize));
  model.zeroGrad();
  // two micro-batches: accumulation must also agree
  const r1 = model.lossAndBackward(tokens, targets, 0.01);
  const r2 = model.lossAndBackward(targets.map((t) => (t < 0 ? 0 : t)), tokens, 0.01);
  const grads = be.download(model.trainable.grads!) as Float32Array;
  const mem = model.memory();
  model.free();
  return { grads, loss: r1.lossSum + r2.lossSum, mem, held };
}

for (const lora of [false, true]) {
  Deno.test(`activationCheckpointing changes no gradient and lowers activation memory (${lora ? "LoRA + dropout" : "full"})`, () => {
    const fx = loadFixture("model_tiny_a");
    const config = { ...fixtureConfig(fx), nLayers: 4 };
    const spec: ModelSpec = {
      name: "tiny",
      config,
      lora: lora
        ? {
          attnModules: ["q_proj", "v_proj", "output_proj"],
          applyToMlp: true,
          applyToOutput: true,
          rank: 4,
          alpha: 8,
          dropout: 0.2,
        }
        : null,
    };
    const B = 2;
    const T = 16;
    const plain = gradsWith(spec, false, B, T);
    const ckpt = gradsWith(spec, true, B, T);
    const diff = maxAbsDiff(plain.grads, ckpt.grads);
    assert(plain.loss === ckpt.loss, `loss ${plain.loss} vs ${ckpt.loss}`);
    assert(diff === 0, `checkpointing changed a gradient by ${diff}`);
    let nonzero = 0;
    for (const g of plain.grads) if (g !== 0) nonzero++;
    assert(
      nonzero > plain.grads.length / 2,
      "gradients are mostly zero: the test would not see a change",
    );
    const a = plain.mem.activations + plain.mem.scratch;
    const b = ckpt.mem.activations + ckpt.mem.scratch;
    console.log(
      `L=${config.nLayers} B=${B} T=${T} ${lora ? "LoRA" : "full"}: peak activation memory ` +
        `${a} bytes without checkpointing, ${b} with (${((1 - b / a) * 100).toFixed(1)}% less); ` +
        `max |grad diff| ${diff}`,
    );
    assert(b < a, "checkpointing did not lower activation memory");
    // the model's own accounting agrees with the backend's live bytes (rope tables aside)
    const m = plain.mem;
    const own = m.parameters + m.gradients + m.optimizer + m.activations + m.scratch;
    const rope = 2 * T * (config.dim / config.nHeads / 2) * 4;
    assert(plain.held === own + rope, `backend holds ${plain.held}, model counts ${own + rope}`);
    console.log(`backend.bytesInUse() delta ${plain.held} vs ${ckpt.held} bytes (whole model)`);
  });
}
