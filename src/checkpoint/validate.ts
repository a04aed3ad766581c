/** Checks of a loaded state dict against the model config it is meant for. */
import { TuneError } from "../errors.ts";
import { headSize, hiddenAct, type LlamaConfig, SIZE_FIELDS } from "../models/llama/config.ts";
import { paramShapes } from "../models/builders/param_shapes.ts";
import type { StateDict } from "../params/state_dict.ts";

/**
 * Throw a one-line TuneError naming `source` and the first tensor that is missing, extra,
 * or whose shape differs from what `cfg` implies.
 */
export function validateStateDict(
  sd: StateDict,
  cfg: LlamaConfig,
  source: string | ((name: string) => string),
): void {
  const want = paramShapes(cfg);
  const where = (name: string) => typeof source === "string" ? source : source(name);
  for (const [name, shape] of want) {
    const t = sd.get(name);
    if (!t) {
      throw new TuneError(
        `${where(name)}: tensor ${name} is missing (the model config expects it)`,
      );
    }
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new TuneError(
        `${where(name)}: tensor ${name} has shape [${t.shape}] but the model config expects ` +
          `[${shape}]; check the checkpoint matches the model`,
      );
    }
  }
  for (const name of sd.keys()) {
    if (!want.has(name)) {
      throw new TuneError(`${where(name)}: unexpected tensor ${name} for this model config`);
    }
  }
}

/** Throw when two configs describe different architectures (e.g. model builder vs checkpoint). */
export function checkSameArchitecture(a: LlamaConfig, b: LlamaConfig, source: string): void {
  const keys = [...SIZE_FIELDS, "qkvBias"] as const;
  // derived values, so an absent optional field equals its default
  const derived = (c: LlamaConfig) => ({
    headSize: headSize(c),
    hiddenAct: hiddenAct(c),
    embedScale: c.embedScale ?? false,
    normOffset: c.normOffset ?? 0,
    qkNorm: c.qkNorm ?? false,
    postNorms: c.postNorms ?? false,
  });
  const [da, db] = [derived(a), derived(b)];
  for (const k of keys) {
    if (a[k] !== b[k]) {
      throw new TuneError(
        `${source}: checkpoint has ${k} ${b[k]} but the model config says ${a[k]}; ` +
          `pick the model builder that matches the checkpoint`,
      );
    }
  }
  for (const k of Object.keys(da) as (keyof typeof da)[]) {
    if (da[k] !== db[k]) {
      throw new TuneError(
        `${source}: checkpoint has ${k} ${db[k]} but the model config says ${da[k]}; ` +
          `pick the model builder that matches the checkpoint`,
      );
    }
  }
}
