/** Shared helpers of the model tests: fixture config -> LlamaConfig, weights -> StateDict. */
import type { Fixture } from "./fixture_io.ts";
import type { LlamaConfig } from "../src/models/llama/config.ts";
import type { StateDict } from "../src/checkpoint/state_dict.ts";
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
