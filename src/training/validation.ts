/**
 * Validation during training (torchtune's `dataset_val` + `run_val_every_n_steps`) and the
 * eval recipe's scoring: every sample of a dataset, in order, in batches of the model's
 * (B, T) shape, the last batch filled with rows that count no tokens. The loss is the sum of
 * token losses over the sum of counted tokens, so it does not depend on the batch size.
 */
import type { Backend } from "../backend/ops.ts";
import type { ComponentSection } from "../config/schema.ts";
import { instantiate } from "../config/instantiate.ts";
import {
  type Batch,
  collatePadded,
  type DatasetBuilder,
  type Sample,
  type TokenizedDataset,
} from "../data/mod.ts";
import { TuneError } from "../errors.ts";
import type { LlamaModel } from "../models/llama/mod.ts";
import type { Tokenizer } from "../tokenizers/types.ts";
import { packingOf } from "./data.ts";
import { allSumF64 } from "./sharded.ts";
import { countTargets } from "./steps.ts";

/** The recipe keys of validation during training. */
export interface ValidationKeys {
  dataset_val: ComponentSection | null;
  run_val_every_n_steps: number | null;
}

/** Params every training recipe with validation declares (torchtune's names). */
export const validationParams = {
  dataset_val: {
    type: "component",
    kind: "dataset",
    default: null,
    doc: "validation dataset, scored every run_val_every_n_steps (null: none)",
  },
  run_val_every_n_steps: {
    type: "int",
    default: null,
    doc: "log val_loss over all of dataset_val every n optimizer steps (null: never)",
  },
  batch_size_val: {
    type: "int",
    default: null,
    doc: "accepted for torchtune configs; validation runs in the training batch shape " +
      "(its loss does not depend on the batch size)",
  },
} as const;

/** The keys of `validationParams`: a recipe whose data is not SFT's drops them. */
export const VALIDATION_KEYS = Object.keys(validationParams) as (keyof typeof validationParams)[];

/** Load the validation dataset when validation is on (TuneError when it is asked for but missing). */
export async function loadValidation(
  keys: ValidationKeys,
  tokenizer: Tokenizer,
): Promise<TokenizedDataset | null> {
  const every = keys.run_val_every_n_steps;
  if (every === null) return null;
  if (!(Number.isInteger(every) && every >= 1)) {
    throw new TuneError(`run_val_every_n_steps must be a positive integer or null, got ${every}`);
  }
  if (!keys.dataset_val) {
    throw new TuneError(
      "run_val_every_n_steps is set but dataset_val is not; add a dataset_val section (or ~run_val_every_n_steps)",
    );
  }
  const ds = await instantiate<DatasetBuilder>(keys.dataset_val).load(tokenizer, {
    maxSeqLen: tokenizer.maxSeqLen ?? null,
  });
  if (ds.samples.length === 0) {
    throw new TuneError(`dataset_val ${ds.source} has no samples; check dataset_val.data_files`);
  }
  return ds;
}

/** The longest sample of a dataset (0 for none). */
export function longestSample(ds: TokenizedDataset | null): number {
  let T = 0;
  for (const s of ds?.samples ?? []) T = Math.max(T, s.tokens.length);
  return T;
}

/**
 * Samples `[rank, rank + W, ...)` of the dataset in (B, T) batches; the last batch is filled
 * with one-token rows whose label is ignored (a packed dataset's filler stays packed, so the
 * batch keeps its block-causal mask).
 */
export function* scoringBatches(
  ds: TokenizedDataset,
  B: number,
  T: number,
  rank = 0,
  worldSize = 1,
  maxBatches: number | null = null,
): Generator<{ batch: Batch; samples: number }> {
  const mine = ds.samples.filter((_, i) => i % worldSize === rank);
  const filler: Sample = {
    tokens: Int32Array.of(ds.padId),
    labels: Int32Array.of(-100),
    ...(ds.packed ? { inputPos: Int32Array.of(0), seqLens: Int32Array.of(1) } : {}),
  };
  // every rank runs the same number of batches (collectives in lockstep)
  let n = Math.ceil(Math.ceil(ds.samples.length / worldSize) / B);
  if (maxBatches !== null) n = Math.min(n, maxBatches);
  for (let i = 0; i < n; i++) {
    const rows = mine.slice(i * B, (i + 1) * B);
    const samples = rows.length;
    while (rows.length < B) rows.push(filler); // (B) rows; fillers count no tokens
    yield { batch: collatePadded(rows, { padId: ds.padId, padTo: T }), samples };
  }
}

/** Mean token loss of a whole dataset under `model` (eval mode: no dropout, no gradients). */
export function scoreLoss(model: LlamaModel, ds: TokenizedDataset): number {
  let lossSum = 0, tokens = 0;
  for (const { batch } of scoringBatches(ds, model.B, model.T)) {
    const r = model.loss(batch.tokens, batch.labels, packingOf(batch));
    lossSum += r.lossSum;
    tokens += r.tokens;
  }
  return tokens > 0 ? lossSum / tokens : Infinity;
}

/**
 * `scoreLoss` of a model built with `groupWindows` (FSDP/ZeRO-3), each rank scoring its
 * share of the samples (every rank calls it, in lockstep); the loss is over all of them.
 */
export async function scoreLossSharded(
  model: LlamaModel,
  ds: TokenizedDataset,
  backend: Backend,
  rank: number,
  worldSize: number,
): Promise<number> {
  let lossSum = 0, tokens = 0;
  for (const { batch } of scoringBatches(ds, model.B, model.T, rank, worldSize)) {
    const { seqLoss: seq } = await model.evalLosses({
      ...packingOf(batch),
      tokens: batch.tokens,
      targets: batch.labels,
    });
    for (const l of seq) lossSum += l;
    tokens += countTargets(batch.labels);
  }
  const [L, N] = await allSumF64(backend, [lossSum, tokens]);
  return N > 0 ? L / N : Infinity;
}
