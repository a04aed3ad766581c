/**
 * GRPO against PyTorch (tests/reference/grpo_reference.py, TRL's GRPOTrainer definitions and
 * torchtune's two dev losses written out in torch float64):
 * - `groupAdvantages()` and `grpoLoss()` per variant (grpo, bnpo, dr_grpo, dapo with
 *   clip-higher, torchtune's GRPOLoss and GRPOSimpleLoss): advantages and loss 1e-9 abs,
 *   d loss / d log p 1e-9 abs; the loss and gradient split in two parts (two micro-batches or
 *   ranks) sum to the whole.
 * - One micro-batch of a tiny LoRA Llama through `GrpoMicroBatch` and `tokenWeightedHead`
 *   in `trainStep` (reference from `evalLosses` with the adapters off, old
 *   log-probs given, logits in 1 and in 4 chunks): loss 1e-6 abs, adapter gradients
 *   atol 1e-4 rtol 1e-3.
 */
import { ok as assert } from "node:assert";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { createLlama } from "../src/models/llama/model.ts";
import {
  groupAdvantages,
  type GrpoLoss,
  grpoLoss,
  type GrpoNormalization,
  grpoVariant,
} from "../src/rlhf/grpo_loss.ts";
import { GrpoMicroBatch, GrpoStepStats, negate, tokenWeightedHead } from "../src/rlhf/grpo_step.ts";
import { assertClose, type Fixture, loadFixture } from "./fixture_io.ts";
import { fixtureConfig, fixtureLora, prefixedStateDict } from "./_model_helpers.ts";

interface Hp {
  normalization: GrpoNormalization;
  scale: boolean;
  eps_low: number;
  eps_high: number;
  beta: number;
  on_policy: boolean;
}

function lossOf(name: string, hp: Hp): GrpoLoss {
  return {
    name,
    normalization: hp.normalization,
    scaleRewards: hp.scale,
    epsLow: hp.eps_low,
    epsHigh: hp.eps_high,
    beta: hp.beta,
    onPolicy: hp.on_policy,
  };
}

interface Case {
  name: string;
  hp: Hp;
  advantages: number[];
  loss: number;
  d_log_probs: number[];
}

Deno.test("grpoLoss() equals PyTorch per variant (TRL's loss types, torchtune's losses)", () => {
  const fx = loadFixture("rlhf_grpo_loss");
  const [G, S, L] = [fx.meta<number>("G"), fx.meta<number>("S"), fx.meta<number>("L")];
  const rewards = Float64Array.from(fx.meta<number[]>("rewards"));
  const lp = Float64Array.from(fx.meta<number[]>("log_probs"));
  const old = Float64Array.from(fx.meta<number[]>("old_log_probs"));
  const ref = Float64Array.from(fx.meta<number[]>("ref_log_probs"));
  const mask = Uint8Array.from(fx.meta<number[]>("mask"));
  const tokens = mask.reduce((a, b) => a + b, 0);
  const counts = { sequences: S, tokens, maxCompletionLength: fx.meta<number>("max_len") };
  for (const c of fx.meta<Case[]>("cases")) {
    const loss = lossOf(c.name, c.hp);
    const adv = groupAdvantages(rewards, G, loss.scaleRewards);
    assertClose(`${c.name} advantages`, adv, c.advantages, { atol: 1e-9, rtol: 0 });
    const x = { logProbs: lp, oldLogProbs: old, refLogProbs: ref, mask, advantages: adv };
    const r = grpoLoss(loss, x, counts);
    console.log(`${c.name}: loss ${r.loss.toFixed(9)} (PyTorch ${c.loss.toFixed(9)})`);
    assertClose(`${c.name} loss`, [r.loss], [c.loss], { atol: 1e-9, rtol: 0 });
    assertClose(`${c.name} d/dlogp`, r.dLogProbs, c.d_log_probs, { atol: 1e-9, rtol: 0 });
    // two parts (micro-batches or ranks): the first 5 sequences, then the rest
    const cut = 5;
    const part = (a: number, b: number) =>
      grpoLoss(loss, {
        logProbs: lp.subarray(a * L, b * L),
        oldLogProbs: old.subarray(a * L, b * L),
        refLogProbs: ref.subarray(a * L, b * L),
        mask: mask.subarray(a * L, b * L),
        advantages: adv.subarray(a, b),
      }, counts);
    const [p1, p2] = [part(0, cut), part(cut, S)];
    assertClose(`${c.name} parts`, [p1.loss + p2.loss], [c.loss], { atol: 1e-12, rtol: 0 });
    assertClose(`${c.name} part grads`, [...p1.dLogProbs, ...p2.dLogProbs], r.dLogProbs, {
      atol: 0,
      rtol: 0,
    });
    if (loss.onPolicy) assert(r.clippedLow + r.clippedHigh === 0);
  }
  // the data hit both clip sides under the off-policy variants
  const r = grpoLoss(grpoVariant("grpo"), {
    logProbs: lp,
    oldLogProbs: old,
    refLogProbs: ref,
    mask,
    advantages: groupAdvantages(rewards, G, true),
  }, counts);
  assert(r.clippedLow > 0 && r.clippedHigh > 0, `clipped ${r.clippedLow}/${r.clippedHigh}`);
});

Deno.test("groupAdvantages() gives 0 for a group of equal rewards and of one", () => {
  const a = groupAdvantages(Float64Array.from([1, 1, 1, 0, 2, 4]), 3, true);
  assertClose("equal group", a.subarray(0, 3), [0, 0, 0], { atol: 0, rtol: 0 });
  assertClose("scaled", a.subarray(3), [-2 / 2.0001, 0, 2 / 2.0001], { atol: 1e-12, rtol: 0 });
  assertClose("one", groupAdvantages(Float64Array.from([3, 5]), 1, true), [0, 0], {
    atol: 0,
    rtol: 0,
  });
});

Deno.test("grpoVariant() sets the papers' options and refuses unknown loss types", () => {
  const d = grpoVariant("dapo");
  assert(d.normalization === "token" && d.epsLow === 0.2 && d.epsHigh === 0.28);
  const dr = grpoVariant("dr_grpo");
  assert(dr.normalization === "constant" && !dr.scaleRewards);
  let msg = "";
  try {
    grpoVariant("ppo");
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(msg.includes("loss_type must be one of grpo, bnpo, dr_grpo, dapo"), msg);
});

function grpoModel(fx: Fixture, be: CpuBackend, logitChunks: number) {
  const lora = fixtureLora(fx);
  const model = createLlama(be, { name: "tiny_grpo", config: fixtureConfig(fx), lora }, {
    batch: fx.meta<number>("S"),
    seqLen: fx.meta<number>("T"),
    seed: lora.seed,
    logitChunks,
  });
  const sd = prefixedStateDict(fx, "w.");
  for (const [n, t] of prefixedStateDict(fx, "init.")) sd.set(n, t);
  model.loadStateDict(sd);
  return model;
}

Deno.test("tokenWeightedHead() gives PyTorch's GRPO adapter gradients", async () => {
  const fx = loadFixture("model_step_grpo");
  const be = new CpuBackend();
  const [S, G, T] = [fx.meta<number>("S"), fx.meta<number>("G"), fx.meta<number>("T")];
  const tk = fx.i32("tokens"), tg = fx.i32("targets"); // (S, T)
  const old = Float64Array.from(fx.f32("old_log_probs")); // (S, T)
  const rewards = Float64Array.from(fx.meta<number[]>("rewards"));
  let tokens = 0;
  for (const t of tg) if (t !== -100) tokens++;
  const counts = { sequences: S, tokens, maxCompletionLength: T };
  for (const name of ["grpo", "dapo", "torchtune.GRPOSimpleLoss"]) {
    for (const chunks of [1, 4]) {
      const loss = lossOf(name, fx.meta<Hp>(`${name}.hp`));
      const model = grpoModel(fx, be, chunks);
      model.zeroGrad();
      const refEval = await model.evalLosses({ tokens: tk, targets: tg }, { adapters: false });
      const ref = negate(refEval.rowLoss());
      const adv = groupAdvantages(rewards, G, loss.scaleRewards);
      const stats = new GrpoStepStats();
      const mb = new GrpoMicroBatch(loss, tg, old, ref, adv, counts, stats);
      await model.trainStep({ tokens: tk, targets: tg }, tokenWeightedHead(mb.weigh));
      const want = fx.meta<number>(`${name}.loss`);
      console.log(
        `${name} (${chunks} logit chunks): loss ${stats.loss.toFixed(9)} (PyTorch ${
          want.toFixed(9)
        }), kl ${stats.metrics().kl.toFixed(6)}`,
      );
      assertClose(`${name} loss`, [stats.loss], [want], { atol: 1e-6, rtol: 0 });
      assert(stats.tokens === tokens);
      for (const n of model.trainableNames()) {
        const g = be.download(model.trainable.grad(n)!) as Float32Array;
        assertClose(`${name} grad ${n}`, g, fx.f32(`${name}.grad.${n}`), {
          atol: 1e-4,
          rtol: 1e-3,
        });
      }
      model.free();
    }
  }
});
