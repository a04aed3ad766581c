/**
 * Steps of a fine-tuning recipe's `setup()` that every recipe takes the same way, each one
 * call in the recipe so its order stays visible there.
 */
import type { Checkpointer, LoadedCheckpoint } from "../checkpoint/checkpointer.ts";
import { instantiate } from "../config/instantiate.ts";
import type { ComponentSection } from "../config/schema.ts";
import { createLlama, type LlamaModel } from "../models/llama/mod.ts";
import type { ModelSpec } from "../models/model_spec.ts";
import type { TrainingOptimizer } from "../optim/create.ts";
import { type CosineWithWarmup, LrScheduler } from "../optim/lr_schedule.ts";
import { beginLoading, type Runtime, shardedModelOptions } from "./parallel.ts";
import type { BatchShape } from "./recipe_api.ts";
import { modelDtypes } from "./steps.ts";
import { withCheckpointFields } from "../models/llama/config.ts";

/**
 * The checkpointer, and the weights it reads when `model_init` is "checkpoint" (null for a
 * seeded random init); the model description takes the checkpoint's q/k row layout.
 */
export function loadWeights(
  keys: { checkpointer: ComponentSection; model_init: string },
  spec: ModelSpec,
): { checkpointer: Checkpointer; loaded: LoadedCheckpoint | null } {
  const checkpointer = instantiate<Checkpointer>(keys.checkpointer);
  if (keys.model_init !== "checkpoint") return { checkpointer, loaded: null };
  const loaded = checkpointer.load({ resumeFromCheckpoint: false });
  spec.config = withCheckpointFields(spec.config, loaded.config);
  return { checkpointer, loaded };
}

/** The model-building keys of a recipe. */
export interface ModelKeys {
  enable_activation_checkpointing: boolean;
  /** Refused on the CPU by memory_options.ts before the model is built. */
  enable_activation_offloading?: boolean;
  dtype: string;
  device: string;
}

/**
 * Allocate the model for the task's batch shape (sharded on N processes) and fill it: the
 * checkpoint's weights (and adapter) or a seeded random init.
 */
export function buildModel(
  rt: Runtime,
  spec: ModelSpec,
  shape: BatchShape,
  keys: ModelKeys,
  o: { seed: number; loaded: LoadedCheckpoint | null; optimizerMoments?: boolean },
): LlamaModel {
  const dtypes = modelDtypes(keys.dtype, keys.device);
  const model = createLlama(rt.backend, spec, {
    batch: shape.batch,
    seqLen: shape.seqLen,
    activationCheckpointing: keys.enable_activation_checkpointing,
    activationOffloading: keys.enable_activation_offloading ?? false,
    seed: o.seed,
    logitChunks: shape.logitChunks,
    activationDtype: dtypes.activationDtype,
    frozenDtype: dtypes.frozenDtype,
    // an 8-bit optimizer keeps its moments outside the store
    ...(o.optimizerMoments === false ? { optimizerMoments: false } : {}),
    ...shardedModelOptions(rt, !!spec.lora),
  });
  beginLoading(rt, model);
  if (o.loaded) {
    const sd = new Map(o.loaded.stateDict);
    for (const [k, t] of o.loaded.adapter ?? []) sd.set(k, t);
    model.loadStateDict(sd);
  } else {
    model.initRandom(o.seed);
  }
  return model;
}

/** The learning-rate schedule over the whole run's steps (null: the optimizer's constant lr). */
export function buildScheduler(
  section: ComponentSection | null,
  optimizer: TrainingOptimizer,
  totalSteps: number,
): LrScheduler | null {
  if (!section) return null;
  return new LrScheduler(instantiate<CosineWithWarmup>(section), optimizer.options.lr, totalSteps);
}
