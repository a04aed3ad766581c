/**
 * What a fine-tuning recipe trains on and how it scores a step, passed into the recipe:
 * a data transform (set up before the model, whose buffers are sized for its batches) and a
 * loss head (bound to the model once it exists). Supervised fine-tuning is
 * `crossEntropyTask`; DPO and distillation recipes pass their own (recipes/lora_dpo.ts,
 * recipes/knowledge_distillation.ts).
 */
import type { Batch, TokenizedDataset } from "../data/mod.ts";
import { instantiate } from "../config/instantiate.ts";
import type { ComponentSection } from "../config/schema.ts";
import type { LlamaModel } from "../models/llama/model.ts";
import type { ModelSpec } from "../models/model_spec.ts";
import { type CrossEntropyLoss, prepareLabels } from "../optim/loss.ts";
import type { Tokenizer } from "../tokenizers/types.ts";
import { packingOf, setupData, type TrainingData } from "./data.ts";
import { allSum, type ModelCalls, type Runtime } from "./parallel.ts";
import type { BatchShape, StepLoss } from "./recipe_api.ts";
import { countTargets } from "./steps.ts";
import { loadValidation, longestSample } from "./validation.ts";

/** What a task is set up from (the recipe's setup has built these first). */
export interface TaskContext {
  rt: Runtime;
  tokenizer: Tokenizer;
  /** The trained model's description (vocabulary, max_seq_len). */
  spec: ModelSpec;
  seed: number;
}

/** A loss head bound to the model: forward and backward of one optimizer step. */
export interface LossHead {
  /**
   * Forward and backward of this rank's `ga` micro-batches of step `s` of `epoch` (the
   * caller zeroed the gradients): the step's loss and metrics over all ranks.
   */
  step(epoch: number, s: number, ga: number): Promise<StepLoss>;
  /** Free what the head holds (a teacher model). */
  free(): void;
}

/** A recipe's data, set up before the model, and the loss head it binds to the model. */
export interface TrainingTask {
  /** The model's batch shape and the micro-batches per epoch on this rank. */
  shape: BatchShape;
  /** dataset_val when validation is on (null: none). */
  validation: TokenizedDataset | null;
  /**
   * The loss head over `model`, called through `calls`; `full` runs a function while the
   * model holds its full weights (GRPO's sampling on sharded runs).
   */
  head(model: LlamaModel, calls: ModelCalls, full: FullWeights): LossHead;
}

/** Runs `fn` while the model holds its full weights (gathered on every rank when sharded). */
export type FullWeights = <R>(fn: () => R | Promise<R>) => Promise<R>;

/** Builds a recipe's task once the tokenizer and model description exist. */
export type TaskBuilder = (ctx: TaskContext) => Promise<TrainingTask>;

/** The keys the supervised task reads. */
export interface SftKeys {
  dataset: ComponentSection;
  loss: ComponentSection | null;
  batch_size: number;
  shuffle: boolean;
  dataset_val?: ComponentSection | null;
  run_val_every_n_steps?: number | null;
}

/**
 * One micro-batch of a supervised head: forward and backward with gradients scaled by
 * `scale`; returns the summed loss and adds per-token metric sums to `sums`.
 */
export type MicroBatchLoss = (
  batch: Batch,
  labels: Int32Array,
  scale: number,
  sums: Record<string, number>,
) => Promise<number>;

/** The supervised data with its cross-entropy settings, before the head is chosen. */
export interface SftData {
  shape: BatchShape;
  validation: TokenizedDataset | null;
  loss: CrossEntropyLoss;
  data: TrainingData;
}

/**
 * The supervised data: the cross-entropy loss (its num_output_chunks sizes the model's
 * logits), dataset_val first (the model's T must fit its samples too), then this rank's
 * share of every global batch (torch's DistributedSampler order).
 */
export async function setupSftData(keys: SftKeys, ctx: TaskContext): Promise<SftData> {
  const loss: CrossEntropyLoss = keys.loss
    ? instantiate<CrossEntropyLoss>(keys.loss)
    : { kind: "cross_entropy", ignoreIndex: -100, numOutputChunks: 1 };
  const validation = await loadValidation(
    {
      dataset_val: keys.dataset_val ?? null,
      run_val_every_n_steps: keys.run_val_every_n_steps ?? null,
    },
    ctx.tokenizer,
  );
  const data = await setupData(keys.dataset, ctx.tokenizer, {
    batchSize: keys.batch_size,
    seed: ctx.seed,
    shuffle: keys.shuffle,
    modelMaxSeqLen: ctx.spec.config.maxSeqLen,
    minSeqLen: longestSample(validation),
    rank: ctx.rt.rank,
    worldSize: ctx.rt.worldSize,
  });
  const shape = {
    batch: keys.batch_size,
    seqLen: data.seqLen,
    logitChunks: loss.numOutputChunks,
    batchesPerEpoch: data.loader.stepsPerEpoch,
  };
  return { shape, validation, loss, data };
}

/**
 * A supervised head: the step's micro-batches through `micro`, the loss normalised by the
 * token count of the whole global batch (torchtune's mean over a step), every sum reduced
 * over ranks in one collective.
 */
export function sftHead(rt: Runtime, sft: SftData, micro: MicroBatchLoss): LossHead["step"] {
  return async (epoch, s, ga) => {
    const { data, loss } = sft;
    const batches = Array.from({ length: ga }, (_, k) => data.loader.batch(epoch, s * ga + k));
    const labels = batches.map((b) => prepareLabels(loss, b.labels));
    const [tokens] = await allSum(rt, [labels.reduce((n, l) => n + countTargets(l), 0)]);
    const n = Math.max(1, tokens);
    const sums: Record<string, number> = {};
    let lossSum = 0;
    for (let k = 0; k < ga; k++) lossSum += await micro(batches[k], labels[k], 1 / n, sums);
    const names = Object.keys(sums).sort();
    const [globalLoss, ...globalSums] = await allSum(rt, [lossSum, ...names.map((k) => sums[k])]);
    const metrics = Object.fromEntries(names.map((k, i) => [k, globalSums[i] / n]));
    return { loss: globalLoss / n, tokens, metrics };
  };
}

/** Supervised fine-tuning: `dataset` under cross-entropy (the full and LoRA recipes' task). */
export function crossEntropyTask(keys: SftKeys): TaskBuilder {
  return async (ctx) => {
    const sft = await setupSftData(keys, ctx);
    return {
      shape: sft.shape,
      validation: sft.validation,
      head: (_model, calls) => ({
        step: sftHead(ctx.rt, sft, async (batch, labels, scale) => {
          const r = await calls.lossAndBackward(batch.tokens, labels, scale, packingOf(batch));
          return r.lossSum;
        }),
        free: () => {},
      }),
    };
  };
}
