/**
 * Ranges of numeric config values, checked when a config is resolved (so `tune validate`
 * and the start of `tune run` both refuse them, in one line, before any work).
 *
 * Why one table keyed by name rather than a bound on every declaration: these are
 * torchtune's key names and each means the same thing wherever it appears (a recipe's top
 * level, a model builder, a tokenizer, an optimizer), so the range is one fact with one
 * home. A declaration can still narrow it with its own `min`/`max` (src/config/schema.ts).
 */
import { TuneError } from "../errors.ts";

/** An allowed range; `minExclusive` means the value must be strictly above `min`. */
export interface Bound {
  min?: number;
  minExclusive?: boolean;
  max?: number;
  maxExclusive?: boolean;
  /** Why the range is what it is, or what to use instead (ends the error line). */
  hint?: string;
}

const COUNT: Bound = { min: 1 };
const POSITIVE: Bound = { min: 0, minExclusive: true };
const NON_NEGATIVE: Bound = { min: 0 };
const PROBABILITY: Bound = { min: 0, max: 1, maxExclusive: true };
const FRACTION: Bound = { min: 0, max: 1 };

/** Ranges by key name (the last part of a dotted key). Keys not listed are unbounded. */
export const KEY_BOUNDS: Readonly<Record<string, Bound>> = {
  // sizes and counts of a run
  batch_size: COUNT,
  batch_size_val: COUNT,
  epochs: { min: 1, hint: "a run trains at least one epoch" },
  gradient_accumulation_steps: COUNT,
  max_steps_per_epoch: { min: 1, hint: "or null for whole epochs" },
  stop_after_steps: { min: 1, hint: "or null to run to the end" },
  log_every_n_steps: COUNT,
  save_every_n_steps: { min: 1, hint: "or null to save only at epoch ends" },
  run_val_every_n_steps: { min: 1, hint: "or null for no validation" },
  max_seq_len: COUNT,
  max_seq_length: COUNT,
  max_new_tokens: COUNT,
  max_steps: COUNT,
  limit: COUNT,
  num_output_chunks: COUNT,
  ppo_epochs: COUNT,
  // model shapes
  vocab_size: COUNT,
  num_layers: COUNT,
  num_heads: COUNT,
  num_kv_heads: COUNT,
  embed_dim: COUNT,
  intermediate_dim: COUNT,
  head_dim: COUNT,
  norm_eps: POSITIVE,
  rope_base: POSITIVE,
  attn_dropout: PROBABILITY,
  // adapters
  lora_rank: { min: 1, hint: "LoRA's rank is the adapters' inner size" },
  lora_alpha: POSITIVE,
  lora_dropout: PROBABILITY,
  // optimisation
  lr: NON_NEGATIVE,
  weight_decay: NON_NEGATIVE,
  eps: POSITIVE,
  clip_grad_norm: { min: 0, minExclusive: true, hint: "or null for no clipping" },
  num_warmup_steps: NON_NEGATIVE,
  label_smoothing: { min: 0, max: 0.5, maxExclusive: true },
  kd_ratio: FRACTION,
  beta: NON_NEGATIVE,
  gamma: NON_NEGATIVE,
  // sampling
  temperature: NON_NEGATIVE,
  top_k: COUNT,
  top_p: { min: 0, minExclusive: true, max: 1 },
  seed: NON_NEGATIVE,
};

/** The range text of a bound: "at least 1", "in (0, 1]", ... */
function describe(b: Bound): string {
  const lo = b.min === undefined ? undefined : b.min;
  const hi = b.max === undefined ? undefined : b.max;
  if (lo !== undefined && hi !== undefined) {
    return `in ${b.minExclusive ? "(" : "["}${lo}, ${hi}${b.maxExclusive ? ")" : "]"}`;
  }
  if (lo !== undefined) return b.minExclusive ? `above ${lo}` : `at least ${lo}`;
  if (hi !== undefined) return b.maxExclusive ? `below ${hi}` : `at most ${hi}`;
  return "any number";
}

/** Whether `v` lies in `b`. */
function within(v: number, b: Bound): boolean {
  if (b.min !== undefined && (b.minExclusive ? v <= b.min : v < b.min)) return false;
  if (b.max !== undefined && (b.maxExclusive ? v >= b.max : v > b.max)) return false;
  return true;
}

/**
 * Throw a one-line TuneError when the number at dotted `path` lies outside the range of its
 * key name (or the declaration's own `own` bound, which takes precedence).
 */
export function checkBound(path: string, value: number, own?: Bound): void {
  const name = path.split(".").filter((p) => !/^\d+$/.test(p)).pop() ?? path;
  const bound = own ?? KEY_BOUNDS[name];
  if (!bound || within(value, bound)) return;
  const hint = bound.hint ? `; ${bound.hint}` : "";
  throw new TuneError(`bad value for '${path}': ${value} must be ${describe(bound)}${hint}`);
}
