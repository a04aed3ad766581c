/**
 * Optimizer pieces: the cosine-with-warmup schedule against the lrs the PyTorch reference
 * used (1e-9 abs; the fixture stores fp32), the registered optim/loss components, and clipGradNorm's PyTorch
 * semantics (scale by max_norm / (norm + 1e-6) only when that is below 1).
 */
import { deepStrictEqual, ok as assert, throws } from "node:assert";
import { loadFixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { findComponent } from "../src/config/registry.ts";
import "../src/optim/components.ts";
import { clipGradNorm } from "../src/optim/clip.ts";
import { cosineMultiplier, LrScheduler } from "../src/optim/lr_schedule.ts";
import { prepareLabels } from "../src/optim/loss.ts";
import type { CrossEntropyLoss } from "../src/optim/loss.ts";
import {
  AdamW,
  type AdamWOptions,
  exportAdamWState,
  importAdamWState,
} from "../src/optim/adamw.ts";
import type { CosineWithWarmup } from "../src/optim/lr_schedule.ts";
import { ParamLayout } from "../src/params/layout.ts";
import { ParamStore } from "../src/params/store.ts";
import { TuneError } from "../src/errors.ts";

Deno.test("LrScheduler.lrAt() matches torchtune's cosine schedule with warmup", () => {
  const fx = loadFixture("model_train_full");
  const hp = fx.meta<{ lr: number; warmup: number }>("hp");
  const lrs = fx.f32("lrs");
  const s = new LrScheduler({ numWarmupSteps: hp.warmup, numCycles: 0.5 }, hp.lr, lrs.length);
  for (let i = 0; i < lrs.length; i++) {
    assert(Math.abs(s.lrAt(i) - lrs[i]) < 1e-9, `step ${i}: ${s.lrAt(i)} vs ${lrs[i]}`);
  }
  assert(cosineMultiplier({ numWarmupSteps: 0, numCycles: 0.5 }, 0, 10) === 1);
  assert(cosineMultiplier({ numWarmupSteps: 0, numCycles: 0.5 }, 10, 10) === 0);
});

Deno.test("optim components build AdamW, the cosine schedule and cross-entropy losses", () => {
  const adamw = findComponent("torch.optim.AdamW")!;
  assert(findComponent("AdamW") === adamw);
  const o = adamw.build({
    lr: 3e-4,
    weight_decay: 0.01,
    betas: [0.9, 0.95],
    eps: 1e-8,
    fused: true,
    amsgrad: false,
  }) as AdamWOptions;
  deepStrictEqual(o, { lr: 3e-4, weightDecay: 0.01, betas: [0.9, 0.95], eps: 1e-8 });
  throws(
    () => adamw.build({ ...o, weight_decay: 0, betas: [0.9], amsgrad: false }),
    TuneError,
  );
  const sched = findComponent("torchtune.modules.get_cosine_schedule_with_warmup")!;
  assert(
    findComponent("torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup") === sched,
  );
  deepStrictEqual(sched.build({ num_warmup_steps: 100, num_cycles: 0.5 }) as CosineWithWarmup, {
    numWarmupSteps: 100,
    numCycles: 0.5,
  });
  const ce = findComponent("torchtune.modules.loss.CEWithChunkedOutputLoss")!;
  const loss = ce.build({ num_output_chunks: 8, ignore_index: -100 }) as CrossEntropyLoss;
  deepStrictEqual(loss, { kind: "cross_entropy", ignoreIndex: -100, numOutputChunks: 8 });
  const plain = findComponent("torch.nn.CrossEntropyLoss")!.build({
    ignore_index: 0,
    reduction: "mean",
  }) as CrossEntropyLoss;
  deepStrictEqual([...prepareLabels(plain, Int32Array.of(0, 5, 0, 7))], [-100, 5, -100, 7]);
});

Deno.test("clipGradNorm() scales gradients like torch.nn.utils.clip_grad_norm_", () => {
  const be = new CpuBackend();
  const layout = new ParamLayout([
    { name: "a", tensors: [{ name: "x", shape: [3] }, { name: "y", shape: [2, 2] }] },
  ]);
  const store = new ParamStore(be, layout, true);
  const gx = [3, 0, 4];
  const gy = [0, 0, 12, 0];
  be.upload(store.grads!, Float32Array.from(gx), layout.get("x").offset);
  be.upload(store.grads!, Float32Array.from(gy), layout.get("y").offset);
  const norm = clipGradNorm(be, store, 1);
  assert(Math.abs(norm - 13) < 1e-6);
  const coef = Math.fround(1 / (13 + 1e-6));
  const got = store.getGrad("x");
  for (let i = 0; i < 3; i++) assert(Math.abs(got[i] - Math.fround(gx[i] * coef)) < 1e-7);
  // below max_norm nothing changes
  const before = be.download(store.grads!);
  clipGradNorm(be, store, 100);
  deepStrictEqual(be.download(store.grads!), before);
});

Deno.test("exportAdamWState() and importAdamWState() resume AdamW bitwise", () => {
  const be = new CpuBackend();
  const layout = new ParamLayout([{ name: "g", tensors: [{ name: "w", shape: [5] }] }]);
  const make = () => {
    const s = new ParamStore(be, layout, true);
    be.upload(s.params, Float32Array.of(1, -2, 3, 0.5, -0.25));
    return {
      s,
      opt: new AdamW(be, s, { lr: 0.1, betas: [0.9, 0.99], eps: 1e-8, weightDecay: 0.1 }),
    };
  };
  const grad = (s: ParamStore, k: number) =>
    be.upload(s.grads!, Float32Array.from({ length: 5 }, (_, i) => Math.sin(i + k)));
  const a = make();
  for (let k = 0; k < 4; k++) {
    grad(a.s, k);
    a.opt.step();
  }
  const b = make();
  for (let k = 0; k < 2; k++) {
    grad(b.s, k);
    b.opt.step();
  }
  const saved = exportAdamWState(b.opt);
  const params = be.download(b.s.params);
  const c = make();
  be.upload(c.s.params, params as Float32Array);
  importAdamWState(c.opt, saved);
  for (let k = 2; k < 4; k++) {
    grad(c.s, k);
    c.opt.step();
  }
  deepStrictEqual(be.download(c.s.params), be.download(a.s.params));
  throws(
    () => importAdamWState(c.opt, { step: 1, m: new Float32Array(3), v: new Float32Array(3) }),
    TuneError,
  );
});
