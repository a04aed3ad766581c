/** Shared helpers of the model tests: fixture config -> LlamaConfig, weights -> StateDict. */
import type { Fixture } from "./fixture_io.ts";
import type { Backend } from "../src/backend/ops.ts";
import type { LlamaModel } from "../src/models/llama/model.ts";
import { AdamW } from "../src/optim/adamw.ts";
import { clipGradNorm } from "../src/optim/clip.ts";
import { LrScheduler } from "../src/optim/lr_schedule.ts";
import type { LlamaConfig } from "../src/models/llama/config.ts";
import type { StateDict } from "../src/params/state_dict.ts";
import type { LoraAttnModule, LoraConfig } from "../src/models/model_spec.ts";

interface MetaConfig {
  vocab: number;
  dim: number;
  n_layers: number;
  n_heads: number;
  n_kv_heads: number;
  hidden: number;
  norm_eps: number;
  rope_theta: number;
  rope_scaling: [number, number, number, number] | null;
  rope_layout: "interleaved" | "half";
  tied: boolean;
  qkv_bias: boolean;
}

/** The LlamaConfig written by tests/reference/model_reference.py. */
export function fixtureConfig(fx: Fixture): LlamaConfig {
  const m = fx.meta<MetaConfig>("config");
  return {
    vocabSize: m.vocab,
    dim: m.dim,
    nLayers: m.n_layers,
    nHeads: m.n_heads,
    nKvHeads: m.n_kv_heads,
    hiddenDim: m.hidden,
    normEps: m.norm_eps,
    ropeTheta: m.rope_theta,
    ropeScaling: m.rope_scaling
      ? {
        factor: m.rope_scaling[0],
        lowFreqFactor: m.rope_scaling[1],
        highFreqFactor: m.rope_scaling[2],
        originalMaxPositionEmbeddings: m.rope_scaling[3],
      }
      : null,
    ropeLayout: m.rope_layout,
    maxSeqLen: 64,
    tiedEmbeddings: m.tied,
    qkvBias: m.qkv_bias,
  };
}

/** LoraConfig of a training fixture. */
export function fixtureLora(fx: Fixture): LoraConfig & { seed: number } {
  const l = fx.meta<
    {
      rank: number;
      alpha: number;
      dropout: number;
      seed: number;
      attn: LoraAttnModule[];
      mlp: boolean;
      output: boolean;
    }
  >("lora");
  return {
    attnModules: l.attn,
    applyToMlp: l.mlp,
    applyToOutput: l.output,
    rank: l.rank,
    alpha: l.alpha,
    dropout: l.dropout,
    seed: l.seed,
  };
}

/** Tensors named `<prefix><name>` as a StateDict keyed by `<name>`. */
export function prefixedStateDict(fx: Fixture, prefix: string): StateDict {
  const sd: StateDict = new Map();
  for (const n of fx.names()) {
    if (n.startsWith(prefix)) {
      sd.set(n.slice(prefix.length), { shape: fx.shape(n), data: fx.f32(n) });
    }
  }
  return sd;
}

/** Largest |a - b|. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** The hyper-parameters a model_train_* fixture records. */
export interface Hp {
  lr: number;
  betas: [number, number];
  eps: number;
  weight_decay: number;
  max_norm: number;
  warmup: number;
}

/**
 * The training schedule of a model_train_* fixture (10 AdamW steps of `micro` micro-batches,
 * clip_grad_norm_, cosine schedule with warmup); returns per-step losses and grad norms.
 */
export function trainOnFixture(model: LlamaModel, be: Backend, fx: Fixture) {
  const hp = fx.meta<Hp>("hp");
  const steps = fx.meta<number>("steps");
  const micro = fx.meta<number>("micro");
  const N = fx.meta<number>("B") * fx.meta<number>("T");
  const tokens = fx.i32("tokens");
  const targets = fx.i32("targets");
  const opt = new AdamW(be, model.trainable, {
    lr: hp.lr,
    betas: hp.betas,
    eps: hp.eps,
    weightDecay: hp.weight_decay,
  });
  const sched = new LrScheduler({ numWarmupSteps: hp.warmup, numCycles: 0.5 }, hp.lr, steps);
  const losses: number[] = [];
  const norms: number[] = [];
  for (let s = 0; s < steps; s++) {
    const mb = (j: number) => (s * micro + j) * N;
    let ntok = 0;
    for (let j = 0; j < micro; j++) {
      for (const t of targets.subarray(mb(j), mb(j) + N)) if (t !== -100) ntok++;
    }
    model.zeroGrad();
    let sum = 0;
    for (let j = 0; j < micro; j++) {
      const r = model.lossAndBackward(
        tokens.subarray(mb(j), mb(j) + N),
        targets.subarray(mb(j), mb(j) + N),
        1 / ntok,
      );
      sum += r.lossSum;
    }
    norms.push(clipGradNorm(be, model.trainable, hp.max_norm));
    opt.step(sched.lrAt(s));
    losses.push(sum / ntok);
  }
  return { losses, norms };
}
