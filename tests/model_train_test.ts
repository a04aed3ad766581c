/**
 * 10 AdamW steps (2 micro-batches each, clip_grad_norm_, cosine schedule with warmup) vs
 * PyTorch, for full fine-tuning and for LoRA (all projections, MLP and output; rank 4,
 * alpha 8, dropout 0.1 with the backend's counter-based masks).
 * Tolerances: per-step losses 1e-4 abs; gradient norms rtol 1e-4; final weights atol 1e-4
 * rtol 1e-3.
 */
import { assertClose, loadFixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { createLlama, type LlamaModel } from "../src/models/llama/model.ts";
import {
  fixtureConfig,
  fixtureLora,
  maxAbsDiff,
  prefixedStateDict,
  trainOnFixture,
} from "./_model_helpers.ts";
import { ok as assert } from "node:assert";
import type { Fixture } from "./fixture_io.ts";

function checkRun(label: string, fx: Fixture, losses: number[], norms: number[]) {
  const ref = fx.f32("losses");
  const refNorms = fx.f32("grad_norms");
  const lossDiff = maxAbsDiff(losses, ref);
  console.log(`${label}: losses ${losses.map((l) => l.toFixed(5)).join(" ")}`);
  console.log(`${label}: max |loss diff| over ${losses.length} steps ${lossDiff.toExponential(2)}`);
  assert(lossDiff <= 1e-4, `${label}: loss diff ${lossDiff}`);
  assertClose(`${label} grad norms`, norms, refNorms, { atol: 0, rtol: 1e-4 });
}

Deno.test("AdamW full fine-tuning matches PyTorch over 10 steps (losses, final weights)", () => {
  const fx = loadFixture("model_train_full");
  const be = new CpuBackend();
  const model = createLlama(be, { name: "tiny", config: fixtureConfig(fx), lora: null }, {
    batch: fx.meta<number>("B"),
    seqLen: fx.meta<number>("T"),
  });
  model.loadStateDict(prefixedStateDict(fx, "w."));
  const { losses, norms } = trainOnFixture(model, be, fx);
  checkRun("full", fx, losses, norms);
  let worst = 0;
  for (const [n, t] of model.stateDict()) {
    const ref = fx.f32("final." + n);
    assertClose(`final ${n}`, t.data, ref, { atol: 1e-4, rtol: 1e-3 });
    worst = Math.max(worst, maxAbsDiff(t.data, ref));
  }
  console.log(`full: worst final weight |diff| ${worst.toExponential(2)}`);
  model.free();
});

Deno.test("AdamW LoRA training matches PyTorch over 10 steps (losses, adapters, merged)", () => {
  const fx = loadFixture("model_train_lora");
  const be = new CpuBackend();
  const lora = fixtureLora(fx);
  const model = createLlama(be, { name: "tiny_lora", config: fixtureConfig(fx), lora }, {
    batch: fx.meta<number>("B"),
    seqLen: fx.meta<number>("T"),
    seed: lora.seed,
  });
  const sd = prefixedStateDict(fx, "w.");
  for (const [n, t] of prefixedStateDict(fx, "init.")) sd.set(n, t);
  model.loadStateDict(sd);
  const base0 = model.base.toStateDict();
  const { losses, norms } = trainOnFixture(model, be, fx);
  checkRun("lora", fx, losses, norms);
  let worst = 0;
  for (const [n, t] of model.adapterStateDict()) {
    const ref = fx.f32("final." + n);
    assertClose(`final ${n}`, t.data, ref, { atol: 1e-4, rtol: 1e-3 });
    worst = Math.max(worst, maxAbsDiff(t.data, ref));
  }
  console.log(`lora: worst final adapter |diff| ${worst.toExponential(2)}`);
  // the frozen base is bitwise unchanged
  for (const [n, t] of model.base.toStateDict()) {
    assert(maxAbsDiff(t.data, base0.get(n)!.data) === 0, `base ${n} changed`);
  }
  const merged = model.mergedStateDict();
  for (const n of fx.names().filter((k) => k.startsWith("merged."))) {
    const name = n.slice("merged.".length);
    assertClose(`merged ${name}`, merged.get(name)!.data, fx.f32(n), { atol: 1e-5, rtol: 1e-4 });
  }
  model.free();
});

Deno.test("dropoutStep resumes LoRA dropout masks bitwise", () => {
  const fx = loadFixture("model_train_lora");
  const be = new CpuBackend();
  const lora = fixtureLora(fx);
  const N = fx.meta<number>("B") * fx.meta<number>("T");
  const tokens = fx.i32("tokens");
  const targets = fx.i32("targets");
  const mk = () => {
    const m = createLlama(be, { name: "tiny_lora", config: fixtureConfig(fx), lora }, {
      batch: fx.meta<number>("B"),
      seqLen: fx.meta<number>("T"),
      seed: lora.seed,
    });
    const sd = prefixedStateDict(fx, "w.");
    for (const [n, t] of prefixedStateDict(fx, "final.")) sd.set(n, t); // nonzero B
    m.loadStateDict(sd);
    return m;
  };
  const step = (m: LlamaModel, i: number) => {
    m.zeroGrad();
    m.lossAndBackward(tokens.subarray(i * N, (i + 1) * N), targets.subarray(i * N, (i + 1) * N), 1);
    return be.download(m.trainable.grads!);
  };
  const a = mk();
  step(a, 0);
  step(a, 1);
  const third = step(a, 2);
  const b = mk();
  b.dropoutStep = 2;
  assert(maxAbsDiff(step(b, 2), third) === 0, "resumed dropout differs");
  const c = mk(); // not resumed: different masks
  assert(maxAbsDiff(step(c, 2), third) > 0);
});
