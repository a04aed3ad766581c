/**
 * Seeded random initialisation of a Llama model's base weights (deterministic for a seed):
 * embeddings and linears N(0, 0.02), the residual projections (output_proj, w2) scaled by
 * 1/sqrt(2L) as in GPT-2/llama2.c training, norms 1, biases 0.
 */
import type { HostTensor, StateDict } from "../../params/state_dict.ts";
import type { ParamLayout } from "../../params/layout.ts";
import { SeededRandom } from "../../params/random.ts";
import type { ParamStore } from "../../params/store.ts";
import type { Nf4Store } from "../../quant/nf4_store.ts";
import type { LlamaConfig } from "./config.ts";
import { baseLayout } from "./layout.ts";

/** Fresh base weights for `layout` as a StateDict, the same for the same seed. */
export function randomBaseWeights(cfg: LlamaConfig, layout: ParamLayout, seed: number): StateDict {
  return new Map(randomBaseTensors(cfg, layout, seed));
}

/** The tensors of `randomBaseWeights`, one at a time in layout order (same values). */
export function* randomBaseTensors(
  cfg: LlamaConfig,
  layout: ParamLayout,
  seed: number,
): Generator<[string, HostTensor]> {
  const fills = randomBaseFills(cfg, layout, seed);
  for (const e of layout.entries) {
    const data = new Float32Array(e.length);
    fills.next().value!(data);
    yield [e.name, { shape: [...e.shape], data }];
  }
}

/**
 * The values of `randomBaseWeights` written into arrays the caller owns (a parameter buffer):
 * one fill per tensor of `layout.entries`, in that order, each called once before the next is
 * taken (they share one random stream).
 */
export function* randomBaseFills(
  cfg: LlamaConfig,
  layout: ParamLayout,
  seed: number,
): Generator<(dst: Float32Array) => void> {
  const rng = new SeededRandom(seed);
  const residStd = 0.02 / Math.sqrt(2 * cfg.nLayers);
  for (const e of layout.entries) {
    // norms start at an effective scale of 1 (Gemma stores scale - 1: zeros, as torchtune)
    if (e.name.endsWith(".scale")) yield (dst) => dst.fill(1 - (cfg.normOffset ?? 0));
    else if (e.name.endsWith(".bias")) yield (dst) => dst.fill(0);
    else if (e.name.endsWith("output_proj.weight") || e.name.endsWith("mlp.w2.weight")) {
      yield (dst) => rng.fillNormal(dst, residStd);
    } else yield (dst) => rng.fillNormal(dst, 0.02);
  }
}

/**
 * `randomBaseWeights(cfg, baseLayout(cfg), seed)` written one tensor at a time straight into
 * the model's base store, or quantized into its NF4 store (which never holds the whole model
 * in fp32).
 */
export function writeRandomBase(
  cfg: LlamaConfig,
  base: ParamStore,
  nf4: Nf4Store | null,
  seed: number,
): void {
  const layout = baseLayout(cfg);
  const fills = randomBaseFills(cfg, layout, seed);
  for (const e of layout.entries) {
    const fill = fills.next().value!;
    if (nf4?.has(e.name)) {
      const data = new Float32Array(e.length);
      fill(data);
      nf4.setTensor(e.name, { shape: [...e.shape], data });
    } else base.fillWith(e.name, fill);
  }
}
