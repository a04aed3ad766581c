/**
 * Preference training against PyTorch (tests/reference/dpo_reference.py):
 * - `preferenceLoss()` for DPO (with and without label smoothing), RSO and SimPO: losses,
 *   rewards and d loss / d log p against torch float64 autograd, atol 1e-12 rtol 1e-9.
 * - 6 DPO steps of a tiny LoRA Llama (dropout on, 2 micro-batches of 2 pairs, clipping,
 *   cosine lr) through `withAdaptersDisabled` + `sequenceLosses` (reference) and
 *   `weightedLossAndBackward` (policy), as the recipe runs them: per-step losses 1e-5 abs,
 *   rewards 1e-5 abs, gradient norms rtol 1e-4, final adapters atol 1e-4 rtol 1e-3.
 * - One micro-batch under SimPO (averaged log-probs, no reference) and RSO (hinge) through
 *   the recipes' `PreferenceMicroBatch`: loss 1e-5 abs, adapter gradients atol 1e-5 rtol 1e-3.
 * - `withAdaptersDisabled` gives the LoRA-free model's logits bitwise; constant weights
 *   give `lossAndBackward`'s gradients (atol 1e-7 rtol 1e-5).
 */
import { ok as assert } from "node:assert";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { createLlama, type LlamaModel } from "../src/models/llama/model.ts";
import { AdamW } from "../src/optim/adamw.ts";
import { clipGradNorm } from "../src/optim/clip.ts";
import { LrScheduler } from "../src/optim/lr_schedule.ts";
import { type PreferenceLoss, preferenceLoss } from "../src/rlhf/preference_loss.ts";
import { PreferenceMicroBatch, PreferenceStepStats } from "../src/rlhf/preference_step.ts";
import { assertClose, type Fixture, loadFixture } from "./fixture_io.ts";
import { fixtureConfig, fixtureLora, prefixedStateDict } from "./_model_helpers.ts";

interface LossCase {
  kind: "dpo" | "rso" | "simpo";
  hp: { beta?: number; gamma?: number; label_smoothing?: number };
  policy_chosen: number[];
  policy_rejected: number[];
  reference_chosen: number[];
  reference_rejected: number[];
  losses: number[];
  chosen_rewards: number[];
  rejected_rewards: number[];
  d_chosen: number[];
  d_rejected: number[];
}

function lossOf(c: LossCase): PreferenceLoss {
  const ls = c.hp.label_smoothing ?? 0;
  if (c.kind === "dpo") return { kind: "dpo", beta: c.hp.beta!, labelSmoothing: ls };
  if (c.kind === "rso") return { kind: "rso", gamma: c.hp.gamma! };
  return { kind: "simpo", beta: c.hp.beta!, gamma: c.hp.gamma!, labelSmoothing: ls };
}

Deno.test("preferenceLoss() matches torchtune's DPO, RSO and SimPO losses, rewards and gradients", () => {
  const cases = loadFixture("rlhf_preference_loss").meta<LossCase[]>("cases");
  assert(cases.length === 4);
  for (const c of cases) {
    const r = preferenceLoss(lossOf(c), {
      policyChosen: Float64Array.from(c.policy_chosen),
      policyRejected: Float64Array.from(c.policy_rejected),
      referenceChosen: Float64Array.from(c.reference_chosen),
      referenceRejected: Float64Array.from(c.reference_rejected),
    });
    const tol = { atol: 1e-12, rtol: 1e-9 };
    const label = `${c.kind} ${JSON.stringify(c.hp)}`;
    assertClose(`${label} losses`, r.losses, c.losses, tol);
    assertClose(`${label} chosen rewards`, r.chosenRewards, c.chosen_rewards, tol);
    assertClose(`${label} rejected rewards`, r.rejectedRewards, c.rejected_rewards, tol);
    assertClose(`${label} d/d chosen`, r.dChosen, c.d_chosen, tol);
    assertClose(`${label} d/d rejected`, r.dRejected, c.d_rejected, tol);
  }
});

interface DpoHp {
  lr: number;
  betas: [number, number];
  eps: number;
  weight_decay: number;
  max_norm: number;
  warmup: number;
  beta: number;
  label_smoothing: number;
}

function dpoModel(fx: Fixture, be: CpuBackend): LlamaModel {
  const lora = fixtureLora(fx);
  const model = createLlama(be, { name: "tiny_dpo", config: fixtureConfig(fx), lora }, {
    batch: 2 * fx.meta<number>("P"),
    seqLen: fx.meta<number>("T"),
    seed: lora.seed,
  });
  const sd = prefixedStateDict(fx, "w.");
  for (const [n, t] of prefixedStateDict(fx, "init.")) sd.set(n, t);
  model.loadStateDict(sd);
  return model;
}

Deno.test("weightedLossAndBackward() trains LoRA with DPO as PyTorch does over 6 steps", () => {
  const fx = loadFixture("model_train_dpo");
  const be = new CpuBackend();
  const model = dpoModel(fx, be);
  const hp = fx.meta<DpoHp>("hp");
  const [P, T] = [fx.meta<number>("P"), fx.meta<number>("T")];
  const [steps, micro] = [fx.meta<number>("steps"), fx.meta<number>("micro")];
  const N = 2 * P * T;
  const V = fixtureConfig(fx).vocabSize;
  const tokens = fx.i32("tokens");
  const targets = fx.i32("targets");
  const loss: PreferenceLoss = { kind: "dpo", beta: hp.beta, labelSmoothing: hp.label_smoothing };
  const opt = new AdamW(be, model.trainable, {
    lr: hp.lr,
    betas: hp.betas,
    eps: hp.eps,
    weightDecay: hp.weight_decay,
  });
  const sched = new LrScheduler({ numWarmupSteps: hp.warmup, numCycles: 0.5 }, hp.lr, steps);
  const losses: number[] = [], norms: number[] = [], rc: number[] = [], rr: number[] = [];
  for (let s = 0; s < steps; s++) {
    model.zeroGrad();
    // the recipe's own micro-batch code (src/rlhf/preference_step.ts)
    const stats = new PreferenceStepStats();
    for (let j = 0; j < micro; j++) {
      const at = (s * micro + j) * N;
      const tk = tokens.subarray(at, at + N), tg = targets.subarray(at, at + N); // (2P, T)
      const ref = model.withAdaptersDisabled(() => model.sequenceLosses(tk, tg));
      const mb = new PreferenceMicroBatch(loss, tg, P, P * micro, ref);
      mb.record(model.weightedLossAndBackward(tk, tg, mb.weigh), V, stats);
    }
    norms.push(clipGradNorm(be, model.trainable, hp.max_norm));
    opt.step(sched.lrAt(s));
    const m = stats.means();
    losses.push(stats.lossSum / stats.pairs);
    rc.push(m["rewards/chosen"]);
    rr.push(m["rewards/rejected"]);
  }
  console.log(`dpo losses ${losses.map((l) => l.toFixed(6)).join(" ")}`);
  assertClose("dpo losses", losses, fx.meta<number[]>("losses"), { atol: 1e-5, rtol: 0 });
  assertClose("rewards/chosen", rc, fx.meta<number[]>("rewards_chosen"), { atol: 1e-5, rtol: 0 });
  assertClose("rewards/rejected", rr, fx.meta<number[]>("rewards_rejected"), {
    atol: 1e-5,
    rtol: 0,
  });
  assertClose("grad norms", norms, fx.meta<number[]>("grad_norms"), { atol: 0, rtol: 1e-4 });
  for (const [n, t] of model.adapterStateDict()) {
    assertClose(`final ${n}`, t.data, fx.f32("final." + n), { atol: 1e-4, rtol: 1e-3 });
  }
  model.free();
});

Deno.test("withAdaptersDisabled() gives the logits of the model without LoRA, bitwise", () => {
  const fx = loadFixture("model_train_dpo");
  const be = new CpuBackend();
  const model = dpoModel(fx, be);
  const plain = createLlama(be, { name: "tiny", config: fixtureConfig(fx), lora: null }, {
    batch: 2 * fx.meta<number>("P"),
    seqLen: fx.meta<number>("T"),
    training: false,
  });
  plain.loadStateDict(prefixedStateDict(fx, "w."));
  const N = 2 * fx.meta<number>("P") * fx.meta<number>("T");
  const tk = fx.i32("tokens").subarray(0, N);
  const want = be.download(plain.forward(tk)) as Float32Array;
  const off = be.download(model.withAdaptersDisabled(() => model.forward(tk))) as Float32Array;
  const on = be.download(model.forward(tk)) as Float32Array;
  assert(off.every((x, i) => Object.is(x, want[i])), "adapters off != model without LoRA");
  assert(on.some((x, i) => x !== want[i]), "the adapters are on again afterwards");
  model.free();
  plain.free();
});

Deno.test("weightedLossAndBackward() with one weight for every sequence gives lossAndBackward's gradients", () => {
  const fx = loadFixture("model_train_dpo");
  const be = new CpuBackend();
  const N = 2 * fx.meta<number>("P") * fx.meta<number>("T");
  const tk = fx.i32("tokens").subarray(0, N), tg = fx.i32("targets").subarray(0, N);
  const grads = (weighted: boolean) => {
    const model = dpoModel(fx, be);
    model.zeroGrad();
    if (weighted) {
      const r = model.weightedLossAndBackward(tk, tg, (l) => l.map(() => 0.25));
      assert(r.seqLoss.length === 2 * fx.meta<number>("P"));
    } else model.lossAndBackward(tk, tg, 0.25);
    const g = be.download(model.trainable.grads!) as Float32Array;
    model.free();
    return g;
  };
  assertClose("grads", grads(true), grads(false), { atol: 1e-7, rtol: 1e-5 });
});

Deno.test("PreferenceMicroBatch gives PyTorch's adapter gradients for SimPO (averaged, no reference) and RSO", () => {
  const fx = loadFixture("model_step_simpo_rso");
  const be = new CpuBackend();
  const P = fx.meta<number>("P");
  const tk = fx.i32("tokens"), tg = fx.i32("targets"); // (2P, T)
  const cases: [string, PreferenceLoss][] = [
    ["simpo", { kind: "simpo", beta: 2.0, gamma: 0.5, labelSmoothing: 0 }],
    ["rso", { kind: "rso", gamma: 0.5 }],
  ];
  for (const [name, loss] of cases) {
    const model = dpoModel(fx, be);
    model.zeroGrad();
    const ref = loss.kind === "simpo"
      ? null
      : model.withAdaptersDisabled(() => model.sequenceLosses(tk, tg));
    const mb = new PreferenceMicroBatch(loss, tg, P, P, ref);
    const stats = new PreferenceStepStats();
    mb.record(model.weightedLossAndBackward(tk, tg, mb.weigh), fixtureConfig(fx).vocabSize, stats);
    const got = stats.lossSum / stats.pairs;
    console.log(
      `${name}: loss ${got.toFixed(6)} (PyTorch ${fx.meta<number>(`${name}_loss`).toFixed(6)})`,
    );
    assertClose(`${name} loss`, [got], [fx.meta<number>(`${name}_loss`)], { atol: 1e-5, rtol: 0 });
    for (const n of model.trainableNames()) {
      const g = be.download(model.trainable.grad(n)!) as Float32Array;
      assertClose(`${name} grad ${n}`, g, fx.f32(`${name}.grad.${n}`), { atol: 1e-5, rtol: 1e-3 });
    }
    model.free();
  }
});
