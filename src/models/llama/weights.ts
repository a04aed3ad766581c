/**
 * Host-side weights of a Llama model: loading the base weights and LoRA/DoRA adapters from a
 * state dict (with one-line errors naming a missing or unexpected tensor), fresh
 * torchtune-style adapter values, and merging the adapters into the base weights for export.
 */
import { mapTensor, type StateDict } from "../../params/state_dict.ts";
import { mergeDoraHost } from "../../modules/dora.ts";
import { initLoraHost, mergeLoraHost } from "../../modules/lora.ts";
import { SeededRandom } from "../../params/random.ts";
import type { ParamStore } from "../../params/store.ts";
import { TuneError } from "../../errors.ts";
import type { LoraConfig } from "../model_spec.ts";
import type { LlamaConfig } from "./config.ts";
import { loraSites } from "./layout.ts";

/** Set every base tensor from `sd`; a missing one is a TuneError naming it and model `name`. */
export function loadBase(base: ParamStore, sd: StateDict, name: string): void {
  for (const e of base.layout.entries) {
    const t = sd.get(e.name);
    if (!t) {
      throw new TuneError(
        `checkpoint has no tensor ${e.name} (expected shape [${
          e.shape.join(", ")
        }]) for model ${name}; check the model builder and checkpoint files`,
      );
    }
    base.setTensor(e.name, t);
  }
}

/** A TuneError naming the first tensor of `sd` that no store of model `name` has. */
export function checkNoExtra(sd: StateDict, stores: (ParamStore | null)[], name: string): void {
  for (const n of sd.keys()) {
    if (!stores.some((s) => s?.layout.has(n))) {
      throw new TuneError(
        `checkpoint tensor ${n} is not a parameter of model ${name}; check that the model builder matches the checkpoint`,
      );
    }
  }
}

/** A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform, a=sqrt(5)), B = 0 for every site. */
export function initLoraWeights(
  adapters: ParamStore,
  cfg: LlamaConfig,
  lora: LoraConfig,
  seed: number,
): void {
  const rng = new SeededRandom(seed);
  for (const s of loraSites(cfg, lora)) {
    const { a, b } = initLoraHost(lora.rank, s.inDim, s.outDim, rng);
    adapters.setTensor(`${s.prefix}.lora_a.weight`, { shape: [lora.rank, s.inDim], data: a });
    adapters.setTensor(`${s.prefix}.lora_b.weight`, { shape: [s.outDim, lora.rank], data: b });
  }
}

/**
 * Load the adapters from `sd`. Returns "fresh" when it has none (the caller initialises
 * them), "no-magnitudes" when it has the LoRA matrices but no DoRA magnitudes (the caller
 * computes them from the loaded weights, torchtune's initialize_dora_magnitude), else
 * "loaded". A partial set is a TuneError naming the first missing tensor.
 */
export function loadAdapters(
  adapters: ParamStore,
  sd: StateDict,
): "fresh" | "no-magnitudes" | "loaded" {
  const all = adapters.layout.entries.map((e) => e.name);
  const mags = all.filter((n) => n.endsWith(".magnitude"));
  const magsPresent = mags.filter((n) => sd.has(n));
  // an adapter without magnitudes (e.g. plain LoRA) gets them from the loaded weights
  const names = magsPresent.length === 0 ? all.filter((n) => !n.endsWith(".magnitude")) : all;
  const present = names.filter((n) => sd.has(n));
  if (present.length === 0) return "fresh";
  for (const n of names) {
    const t = sd.get(n);
    if (!t) {
      throw new TuneError(
        `adapter checkpoint has ${
          present[0]
        } but no ${n}; check lora_attn_modules, apply_lora_to_mlp and apply_lora_to_output against the adapter file`,
      );
    }
    adapters.setTensor(n, t);
  }
  return magsPresent.length === 0 ? "no-magnitudes" : "loaded";
}

/**
 * `sd` (base weights) with every adapter of `ad` merged in: W += (alpha / r) B A; with DoRA
 * W' = (magnitude / ||W + s B A||)[:, None] * (W + s B A). Changes `sd` in place; a lazy
 * weight stays lazy (merged when its values are used).
 */
export function mergeAdapters(
  sd: StateDict,
  ad: StateDict,
  cfg: LlamaConfig,
  lora: LoraConfig,
): StateDict {
  for (const s of loraSites(cfg, lora)) {
    const wName = s.prefix === "output" && cfg.tiedEmbeddings
      ? "tok_embeddings.weight"
      : `${s.prefix}.weight`;
    const w = sd.get(wName)!;
    const aw = ad.get(`${s.prefix}.lora_a.weight`)!.data;
    const bw = ad.get(`${s.prefix}.lora_b.weight`)!.data;
    const mag = lora.useDora ? ad.get(`${s.prefix}.magnitude`)!.data : null;
    // lazy when w is (a model's live weights): merged while a writer streams it out
    const merged = mapTensor(w, (data) => {
      if (mag) data.set(mergeDoraHost(data, aw, bw, mag, s.outDim, s.inDim, lora.rank, lora.alpha));
      else mergeLoraHost(data, aw, bw, s.outDim, s.inDim, lora.rank, lora.alpha, data);
    });
    sd.set(wName, merged);
  }
  return sd;
}
