/**
 * Knowledge distillation against PyTorch (tests/reference/distill_reference.py):
 * - `distillCrossEntropy` (CPU backend): class and KD losses atol 1e-5 rtol 1e-5, the fused
 *   gradient atol 1e-6 rtol 1e-4, written in place over the logits.
 * - 5 steps of a tiny LoRA student (dropout on) distilled from a wider full teacher, as the
 *   recipe runs them (`teacher.forward`, then `distillLossAndBackward`): per-step losses,
 *   class and KD losses 1e-5 abs, gradient norms rtol 1e-4, final adapters atol 1e-4 rtol 1e-3.
 */
import { ok as assert } from "node:assert";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { createLlama } from "../src/models/llama/model.ts";
import { AdamW } from "../src/optim/adamw.ts";
import { clipGradNorm } from "../src/optim/clip.ts";
import { LrScheduler } from "../src/optim/lr_schedule.ts";
import { assertClose, type Fixture, loadFixture } from "./fixture_io.ts";
import { fixtureConfig, fixtureLora, prefixedStateDict } from "./_model_helpers.ts";

Deno.test("distillCrossEntropy() gives torchtune's class loss, ForwardKL token losses and their gradient", () => {
  const fx = loadFixture("ops_distill");
  const be = new CpuBackend();
  const [N, V] = [fx.meta<number>("N"), fx.meta<number>("V")];
  const logits = be.alloc(N * V), teacher = be.alloc(N * V), targets = be.alloc(N, "i32");
  const losses = be.alloc(N), kd = be.alloc(N);
  be.upload(logits, fx.f32("logits"));
  be.upload(teacher, fx.f32("teacher"));
  be.upload(targets, fx.i32("targets"));
  const r = fx.meta<number>("kd_ratio"), scale = fx.meta<number>("grad_scale");
  be.distillCrossEntropy(losses, kd, logits, logits, teacher, targets, N, V, r, scale);
  const tol = { atol: 1e-5, rtol: 1e-5 };
  assertClose("class losses", be.download(losses), fx.f32("losses"), tol);
  assertClose("KD losses", be.download(kd), fx.f32("kd_losses"), tol);
  assertClose("dlogits (in place)", be.download(logits), fx.f32("dlogits"), {
    atol: 1e-6,
    rtol: 1e-4,
  });
});

interface KdHp {
  lr: number;
  betas: [number, number];
  eps: number;
  weight_decay: number;
  max_norm: number;
  warmup: number;
  kd_ratio: number;
}

/** The teacher's view of the fixture: its own config under "config". */
function teacherFixture(fx: Fixture): Fixture {
  return { ...fx, meta: <T>(k: string) => fx.meta<T>(k === "config" ? "teacher_config" : k) };
}

Deno.test("distillLossAndBackward() distils a LoRA student from a teacher as PyTorch does over 5 steps", () => {
  const fx = loadFixture("model_train_kd");
  const be = new CpuBackend();
  const [B, T] = [fx.meta<number>("B"), fx.meta<number>("T")];
  const lora = fixtureLora(fx);
  const student = createLlama(be, { name: "student", config: fixtureConfig(fx), lora }, {
    batch: B,
    seqLen: T,
    seed: lora.seed,
  });
  const sd = prefixedStateDict(fx, "w.");
  for (const [n, t] of prefixedStateDict(fx, "init.")) sd.set(n, t);
  student.loadStateDict(sd);
  const tfx = teacherFixture(fx);
  const teacher = createLlama(be, { name: "teacher", config: fixtureConfig(tfx), lora: null }, {
    batch: B,
    seqLen: T,
    training: false,
  });
  teacher.loadStateDict(prefixedStateDict(fx, "teacher."));
  const hp = fx.meta<KdHp>("hp");
  const [steps, micro] = [fx.meta<number>("steps"), fx.meta<number>("micro")];
  const opt = new AdamW(be, student.trainable, {
    lr: hp.lr,
    betas: hp.betas,
    eps: hp.eps,
    weightDecay: hp.weight_decay,
  });
  const sched = new LrScheduler({ numWarmupSteps: hp.warmup, numCycles: 0.5 }, hp.lr, steps);
  const N = B * T, tokens = fx.i32("tokens"), targets = fx.i32("targets");
  const losses: number[] = [], cls: number[] = [], kds: number[] = [], norms: number[] = [];
  for (let s = 0; s < steps; s++) {
    const mb = (j: number) => (s * micro + j) * N;
    let ntok = 0;
    for (let j = 0; j < micro; j++) {
      for (const t of targets.subarray(mb(j), mb(j) + N)) if (t !== -100) ntok++;
    }
    student.zeroGrad();
    let ce = 0, kd = 0;
    for (let j = 0; j < micro; j++) {
      const tk = tokens.subarray(mb(j), mb(j) + N), tg = targets.subarray(mb(j), mb(j) + N);
      const teacherLogits = teacher.forward(tk);
      const r = student.distillLossAndBackward(tk, tg, 1 / ntok, {
        teacherLogits,
        kdRatio: hp.kd_ratio,
      });
      ce += r.lossSum;
      kd += r.kdLossSum;
      assert(r.tokens > 0);
    }
    norms.push(clipGradNorm(be, student.trainable, hp.max_norm));
    opt.step(sched.lrAt(s));
    cls.push(ce / ntok);
    kds.push(kd / ntok);
    losses.push((1 - hp.kd_ratio) * ce / ntok + hp.kd_ratio * kd / ntok);
  }
  console.log(`kd losses ${losses.map((l) => l.toFixed(6)).join(" ")}`);
  const abs = { atol: 1e-5, rtol: 0 };
  assertClose("losses", losses, fx.meta<number[]>("losses"), abs);
  assertClose("class losses", cls, fx.meta<number[]>("class_losses"), abs);
  assertClose("KD losses", kds, fx.meta<number[]>("kd_losses"), abs);
  assertClose("grad norms", norms, fx.meta<number[]>("grad_norms"), { atol: 0, rtol: 1e-4 });
  for (const [n, t] of student.adapterStateDict()) {
    assertClose(`final ${n}`, t.data, fx.f32("final." + n), { atol: 1e-4, rtol: 1e-3 });
  }
  student.free();
  teacher.free();
});
