/**
 * What the fine-tuning recipes give callers that run them in-process (the demo, tests):
 * `runLoraFinetune(cfg, launch, hooks)` / `runFullFinetune(...)` return a `FinetuneResult`.
 */
import type { LlamaModel } from "../models/llama/model.ts";
import type { Tokenizer } from "../tokenizers/types.ts";
import type { StepMetrics } from "./run_log.ts";

/** Optional callbacks and switches of an in-process run. */
export interface FinetuneHooks {
  /** Called after every optimizer step with its metrics (the same record as metrics.jsonl). */
  onStep?(metrics: StepMetrics): void;
  /** Called after each checkpoint save with the directory written. */
  onSave?(dir: string): void;
  /** No progress bar and no summary (the caller prints its own). */
  quiet?: boolean;
}

/** What a fine-tuning run leaves behind. */
export interface FinetuneResult {
  outputDir: string;
  /** `<output_dir>/metrics.jsonl`: one JSON record per optimizer step. */
  metricsPath: string;
  /** `<output_dir>/loss_curve.svg`. */
  lossCurvePath: string;
  /** The last checkpoint directory written (`epoch_<N>` or `step_<N>`), or null. */
  checkpointDir: string | null;
  /** Metrics of every step run by this call (a resumed run starts after the checkpoint). */
  steps: StepMetrics[];
  /** The trained model, still on its backend (e.g. to generate from it); call `free()` when done. */
  model: LlamaModel;
  tokenizer: Tokenizer;
  /** The run's seed (the configured one, or the one picked when `seed` was null). */
  seed: number;
}

/** The model's batch shape and the data's batches per epoch (a recipe's `setupLossAndData`). */
export interface BatchShape {
  /** Sequences per micro-batch (B). */
  batch: number;
  /** T. */
  seqLen: number;
  /** The model's logit chunks (torchtune's num_output_chunks). */
  logitChunks: number;
  /** Micro-batches per epoch. */
  batchesPerEpoch: number;
}

/** What one optimizer step's micro-batches gave (a recipe's `accumulateStep`). */
export interface StepLoss {
  /** The step's loss (the recipe's own mean). */
  loss: number;
  /** Loss-counted tokens. */
  tokens: number;
  /** Recipe-specific metrics for metrics.jsonl and the metric logger. */
  metrics: Record<string, number>;
}
