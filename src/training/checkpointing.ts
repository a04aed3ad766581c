/**
 * Saving and restoring a training run, shared by the fine-tuning recipes.
 *
 * A save writes the weights in the checkpointer's format (`<output_dir>/epoch_<N>/` at an
 * epoch end, `<output_dir>/step_<N>/` in between): the full model for full fine-tuning; for
 * LoRA the PEFT adapter, plus the merged weights at an epoch end (unless adapter-only). Alongside, the recipe
 * state (`<output_dir>/recipe_state/`) holds what exact resume needs: the fp32 trainable
 * weights and both AdamW moments (whatever dtype the output format stores), the optimizer
 * step, epoch, position in the epoch's data order and the seed. Resuming from it gives
 * bitwise the same losses as the uninterrupted run.
 */
import { join } from "node:path";
import { type Checkpointer, loraSavesMergedModel } from "../checkpoint/checkpointer.ts";
import { loadRecipeState, type RecipeState } from "../checkpoint/recipe_state.ts";
import type { StateDict } from "../params/state_dict.ts";
import type { ComponentSection } from "../config/schema.ts";
import { TuneError } from "../errors.ts";
import type { LlamaModel } from "../models/llama/model.ts";
import { AdamW } from "../optim/adamw.ts";
import { AdamW8bit } from "../optim/adamw8bit.ts";
import type { TrainingOptimizer } from "../optim/create.ts";

/** Where a run stands; saved in the recipe state and restored on resume. */
export interface TrainingProgress {
  /** Optimizer steps taken so far (over all epochs). */
  step: number;
  /** The epoch in progress (the next one to run when `dataPosition` is 0). */
  epoch: number;
  /** Micro-batches of `epoch` already consumed. */
  dataPosition: number;
  /** The run's seed (shuffling, adapter init, dropout). */
  seed: number;
}

const PARAMS = "trainable.params";
const M = "adamw.m";
const V = "adamw.v";

/**
 * The optimizer state of a sharded run, gathered on the host: both AdamW moments over the
 * whole trainable layout, or 8-bit AdamW's tensors (`AdamW8bit.exportState`'s format).
 */
export type HostMoments =
  | {
    /** (total) first moment. */
    m: Float32Array;
    /** (total) second moment. */
    v: Float32Array;
  }
  | { adamw8bit: StateDict };

/**
 * The recipe state of a run: trainable weights, AdamW moments (fp32), the progress and the
 * model's dropout step (which keys LoRA dropout masks). `moments` supplies the moments
 * when the store has none (a sharded optimizer gathers its ranks' slices into them).
 */
export function trainingRecipeState(
  model: LlamaModel,
  progress: TrainingProgress,
  extra: Record<string, unknown> = {},
  moments?: HostMoments,
  optimizer?: TrainingOptimizer,
): RecipeState {
  const store = model.trainable;
  const be = store.backend;
  const n = store.layout.total;
  const tensors: StateDict = new Map();
  // (total) each: the flat buffers, alignment padding included
  tensors.set(PARAMS, { shape: [n], data: be.download(store.params) as Float32Array });
  if (optimizer instanceof AdamW8bit) {
    // 8-bit moments: codes and block absmaxes, exactly
    const sd = moments && "adamw8bit" in moments ? moments.adamw8bit : optimizer.exportState();
    for (const [k, t] of sd) tensors.set(k, t);
  } else {
    // a sharded run's gathered moments, PagedAdamW's host pages, or the store's
    const h = moments && "m" in moments
      ? moments
      : optimizer instanceof AdamW && optimizer.paged
      ? optimizer.paged.exportMoments()
      : null;
    tensors.set(M, { shape: [n], data: h?.m ?? be.download(store.m!) as Float32Array });
    tensors.set(V, { shape: [n], data: h?.v ?? be.download(store.v!) as Float32Array });
  }
  return {
    step: progress.step,
    epoch: progress.epoch,
    seed: progress.seed,
    dataPosition: progress.dataPosition,
    lrScheduler: { lastStep: progress.step },
    rng: { dropoutStep: model.dropoutStep },
    tensors,
    extra: { ...extra, trainable: store.layout.entries.map((e) => e.name).join(",") },
  };
}

/**
 * Put the saved trainable weights, moments and dropout step back into `model` and
 * `optimizer`, and return the progress to continue from. A state from a different model or
 * trainable set is a TuneError. When the store has no moments (sharded optimizer), the
 * caller takes its slice of them from `recipeStateMoments(state)`.
 */
export function restoreTrainingState(
  state: RecipeState,
  model: LlamaModel,
  optimizer: TrainingOptimizer,
): TrainingProgress {
  const store = model.trainable;
  const names = store.layout.entries.map((e) => e.name).join(",");
  const p = state.tensors.get(PARAMS);
  if (!p || state.extra?.trainable !== names || p.data.length !== store.layout.total) {
    throw new TuneError(
      `the recipe state to resume from was saved by a different model or LoRA setup; ` +
        `resume with the config of that run or set resume_from_checkpoint=False`,
    );
  }
  const be = store.backend;
  be.upload(store.params, p.data, 0);
  if (optimizer instanceof AdamW8bit) optimizer.importState(state.tensors, state.step);
  else if (optimizer.paged) {
    optimizer.paged.importMoments(state.tensors.get(M)!.data, state.tensors.get(V)!.data);
  } else if (store.m && store.v) {
    be.upload(store.m, state.tensors.get(M)!.data, 0);
    be.upload(store.v, state.tensors.get(V)!.data, 0);
  }
  optimizer.stepCount = state.step;
  const rng = state.rng as { dropoutStep?: number } | null;
  model.dropoutStep = rng?.dropoutStep ?? 0;
  return {
    step: state.step,
    epoch: state.epoch,
    dataPosition: state.dataPosition,
    seed: state.seed,
  };
}

/** The saved AdamW moments (whole layout) of a recipe state from `trainingRecipeState`. */
export function recipeStateMoments(state: RecipeState): { m: Float32Array; v: Float32Array } {
  return { m: state.tensors.get(M)!.data, v: state.tensors.get(V)!.data };
}

/**
 * The recipe state to resume from when the weights are not loaded through the checkpointer
 * (`model_init: random`): `checkpointer.recipe_checkpoint`, else `<output_dir>/recipe_state`.
 */
export function loadRecipeStateFor(checkpointer: ComponentSection): RecipeState {
  return loadRecipeState(recipeStatePath(checkpointer));
}

/** Where `loadRecipeStateFor` reads the recipe state. */
export function recipeStatePath(checkpointer: ComponentSection): string {
  const dir = checkpointer.recipe_checkpoint as string | null;
  const base = checkpointer.checkpoint_dir as string;
  return dir
    ? (dir.startsWith("/") ? dir : join(base, dir))
    : join(checkpointer.output_dir as string, "recipe_state");
}

/** What `saveTrainingCheckpoint` writes. */
export interface SaveCheckpointOptions {
  checkpointer: Checkpointer;
  model: LlamaModel;
  optimizer: TrainingOptimizer;
  progress: TrainingProgress;
  /** Directory under output_dir: `epoch_<N>` or `step_<N>`. */
  dirName: string;
  /** LoRA runs: write only the adapter, not the merged model, even at an epoch end. */
  adapterOnly?: boolean;
  /** Free-form values kept in the recipe state (total tokens, micro-steps, ...). */
  extra?: Record<string, unknown>;
  /** The moments when the store has none (gathered from a sharded optimizer). */
  moments?: HostMoments;
}

/** Save weights (and adapter) plus the recipe state; returns the directory written. */
export function saveTrainingCheckpoint(o: SaveCheckpointOptions): string {
  const { model } = o;
  const lora = model.spec.lora;
  const recipeState = trainingRecipeState(model, o.progress, o.extra, o.moments, o.optimizer);
  return o.checkpointer.save({
    epoch: o.progress.epoch,
    dirName: o.dirName,
    config: model.cfg,
    stateDict: !lora ? model.stateDict() : loraSavesMergedModel({
        isEpochEnd: o.dirName.startsWith("epoch_"),
        adapterOnly: !!o.adapterOnly,
      })
      ? model.mergedStateDict()
      : undefined,
    adapter: lora ? { stateDict: model.adapterStateDict(), lora } : undefined,
    recipeState,
  });
}
