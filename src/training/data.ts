/**
 * The recipes' data setup: tokenize the configured dataset and batch it at one fixed
 * sequence length, since the model's buffers are allocated once for (B, T).
 */
import type { ComponentSection } from "../config/schema.ts";
import { instantiate } from "../config/instantiate.ts";
import { type Batch, DataLoader, type TokenizedDataset } from "../data/mod.ts";
import type { BatchOptions } from "../models/llama/mod.ts";
import { TuneError } from "../errors.ts";
import type { Tokenizer } from "../tokenizers/types.ts";

/** Options of `setupData`. */
export interface DataSetupOptions {
  /** Samples per micro-batch. */
  batchSize: number;
  seed: number;
  shuffle: boolean;
  /** The model's max_seq_len: no batch may be longer. */
  modelMaxSeqLen: number;
  /** Pad batches to at least this T (e.g. the longest validation sample; default 0). */
  minSeqLen?: number;
  /** Distributed runs: this rank and the world size (default 0 of 1). */
  rank?: number;
  worldSize?: number;
}

/** A loaded dataset and its loader. */
export interface TrainingData {
  dataset: TokenizedDataset;
  loader: DataLoader;
  /** T of every batch: the longest sample (or minSeqLen), so padding never changes a loss. */
  seqLen: number;
}

/**
 * Build the dataset component, tokenize it (truncating to the tokenizer's max_seq_len as
 * torchtune does) and make a loader that pads every batch to the longest sample.
 */
export async function setupData(
  section: ComponentSection,
  tokenizer: Tokenizer,
  o: DataSetupOptions,
): Promise<TrainingData> {
  const dataset = await loadDatasetSection<TokenizedDataset>(section, tokenizer);
  if (dataset.samples.length === 0) {
    throw new TuneError(`dataset ${dataset.source} has no samples; check dataset.data_files`);
  }
  let seqLen = 0;
  for (const s of dataset.samples) seqLen = Math.max(seqLen, s.tokens.length);
  seqLen = Math.max(seqLen, o.minSeqLen ?? 0);
  checkFitsModel(seqLen, o.modelMaxSeqLen);
  const loader = new DataLoader(dataset.samples, {
    batchSize: o.batchSize,
    seed: o.seed,
    shuffle: o.shuffle,
    padId: dataset.padId,
    padTo: seqLen,
    rank: o.rank ?? 0,
    worldSize: o.worldSize ?? 1,
  });
  if (loader.stepsPerEpoch === 0) {
    throw new TuneError(
      `dataset ${dataset.source} has ${dataset.samples.length} samples, fewer than batch_size=${o.batchSize}` +
        `${(o.worldSize ?? 1) > 1 ? ` per rank (${o.worldSize} ranks)` : ""}; lower batch_size`,
    );
  }
  return { dataset, loader, seqLen };
}

/**
 * The dataset component (SFT or preference) built and loaded, truncating to the tokenizer's
 * max_seq_len as torchtune does.
 */
export function loadDatasetSection<D>(section: ComponentSection, tokenizer: Tokenizer): Promise<D> {
  const builder = instantiate<DatasetLoader<D>>(section);
  return builder.load(tokenizer, { maxSeqLen: tokenizer.maxSeqLen ?? null });
}

/** What a dataset component builds: a loader of its tokenized data. */
interface DatasetLoader<D> {
  load(tokenizer: Tokenizer, options: { maxSeqLen: number | null }): Promise<D>;
}

/** A batch of `seqLen` tokens must fit the model's max_seq_len (TuneError naming the fix). */
export function checkFitsModel(seqLen: number, modelMaxSeqLen: number): void {
  if (seqLen > modelMaxSeqLen) {
    throw new TuneError(
      `dataset samples are up to ${seqLen} tokens but the model's max_seq_len is ${modelMaxSeqLen}; ` +
        `set tokenizer.max_seq_len=${modelMaxSeqLen} (or dataset.max_seq_len)`,
    );
  }
}

/**
 * The model options of a batch: a packed batch's segment ids (block-causal attention, so
 * samples of a pack never see each other) and per-sample positions (torchtune's input_pos);
 * an unpacked batch gets none (plain causal, positions 0..T-1).
 */
export function packingOf(batch: Batch): BatchOptions {
  return { segments: batch.segments ?? null, positions: batch.inputPos ?? null };
}
