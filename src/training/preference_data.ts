/**
 * The preference recipes' data setup: tokenize the configured preference dataset and
 * batch pairs at one fixed sequence length (the model's buffers are allocated once), as
 * torchtune's padded_collate_dpo: a batch of P pairs is (2P, T), the P chosen sequences
 * first, then the P rejected ones in the same order.
 */
import type { ComponentSection } from "../config/schema.ts";
import { instantiate } from "../config/instantiate.ts";
import { type Batch, BatchSampler, collatePadded } from "../data/mod.ts";
import type { PreferenceDataset } from "../data/preference.ts";
import { TuneError } from "../errors.ts";
import type { ModelSpec } from "../models/model_spec.ts";
import type { PreferenceLoss } from "../rlhf/preference_loss.ts";
import type { Tokenizer } from "../tokenizers/types.ts";
import type { BatchShape } from "./recipe_api.ts";
import { checkFitsModel, type DataSetupOptions, loadDatasetSection } from "./data.ts";

/** A loaded preference dataset and its batches. */
export interface PreferenceTrainingData {
  dataset: PreferenceDataset;
  sampler: BatchSampler;
  /** T of every batch: the longest chosen or rejected sample. */
  seqLen: number;
  /** Pairs per batch (the model runs 2x this many sequences). */
  pairsPerBatch: number;
  /** The (2P, T) batch at (epoch, step): chosen rows, then rejected rows. */
  batch(epoch: number, step: number): Batch;
}

/** Build the dataset component, tokenize it and batch pairs; `batchSize` counts pairs. */
export async function setupPreferenceData(
  section: ComponentSection,
  tokenizer: Tokenizer,
  o: DataSetupOptions,
): Promise<PreferenceTrainingData> {
  const dataset = await loadDatasetSection<PreferenceDataset>(section, tokenizer);
  const pairs = dataset.pairs;
  if (pairs.length === 0) {
    throw new TuneError(`dataset ${dataset.source} has no pairs; check dataset.data_files`);
  }
  let seqLen = 0;
  for (const p of pairs) {
    seqLen = Math.max(seqLen, p.chosen.tokens.length, p.rejected.tokens.length);
  }
  checkFitsModel(seqLen, o.modelMaxSeqLen);
  const sampler = new BatchSampler(pairs.length, {
    batchSize: o.batchSize,
    seed: o.seed,
    shuffle: o.shuffle,
    rank: o.rank ?? 0,
    worldSize: o.worldSize ?? 1,
  });
  if (sampler.stepsPerEpoch === 0) {
    throw new TuneError(
      `dataset ${dataset.source} has ${pairs.length} pairs, fewer than batch_size=${o.batchSize}; lower batch_size`,
    );
  }
  return {
    dataset,
    sampler,
    seqLen,
    pairsPerBatch: o.batchSize,
    batch(epoch, step) {
      const picked = Array.from(sampler.batchIndices(epoch, step), (i) => pairs[i]);
      const rows = [...picked.map((p) => p.chosen), ...picked.map((p) => p.rejected)];
      return collatePadded(rows, { padId: dataset.padId, padTo: seqLen });
    },
  };
}

/** The preference keys a recipe resolves (its whole config has more). */
export interface PreferenceKeys {
  loss: ComponentSection | null;
  dataset: ComponentSection;
  batch_size: number;
  shuffle: boolean;
}

/**
 * The preference loss (default DPO, beta 0.1) and this rank's pairs, and the model's batch
 * shape: 2P sequences per micro-batch, all logits at once (every sequence's weight depends
 * on every sequence's loss).
 */
export async function setupPreferenceTraining(
  keys: PreferenceKeys,
  tokenizer: Tokenizer,
  student: ModelSpec,
  seed: number,
  rank = 0,
  worldSize = 1,
): Promise<{ loss: PreferenceLoss; pairs: PreferenceTrainingData; shape: BatchShape }> {
  const loss = keys.loss
    ? instantiate<PreferenceLoss>(keys.loss)
    : { kind: "dpo" as const, beta: 0.1, labelSmoothing: 0 };
  const pairs = await setupPreferenceData(keys.dataset, tokenizer, {
    batchSize: keys.batch_size,
    seed,
    shuffle: keys.shuffle,
    modelMaxSeqLen: student.config.maxSeqLen,
    rank,
    worldSize,
  });
  const shape = {
    batch: 2 * keys.batch_size,
    seqLen: pairs.seqLen,
    logitChunks: 1,
    batchesPerEpoch: pairs.sampler.stepsPerEpoch,
  };
  return { loss, pairs, shape };
}
