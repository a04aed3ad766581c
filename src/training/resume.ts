/**
 * Resuming a run: read the recipe state, check that the batch it was trained with is the
 * one configured now, and say where the run continues.
 *
 * A step's data and its place in the lr schedule depend on the global batch (batch_size x
 * world size) and on gradient_accumulation_steps. A different world size with the same
 * global batch (4 x 1 process = 2 x 2) continues exactly; any other change is refused in
 * one line, or, with allow_changed_batch=true, continues at the same sample with a warning.
 */
import type { RecipeState } from "../checkpoint/recipe_state.ts";
import type { ComponentSection } from "../config/schema.ts";
import { TuneError } from "../errors.ts";
import { loadRecipeStateFor, recipeStatePath } from "./checkpointing.ts";
import { logs } from "../config/run_keys.ts";

/** The batch a run trains with, kept in its recipe state. */
export interface BatchRecord {
  batch_size: number;
  gradient_accumulation_steps: number;
  world_size: number;
}

/** The keys resuming reads. */
export interface ResumeKeys {
  checkpointer: ComponentSection;
  resume_from_checkpoint: boolean;
  allow_changed_batch: boolean;
  batch_size: number;
  gradient_accumulation_steps: number;
}

/** The batch record of this run (saved with every checkpoint). */
export function batchRecord(keys: ResumeKeys, worldSize: number): BatchRecord {
  return {
    batch_size: keys.batch_size,
    gradient_accumulation_steps: keys.gradient_accumulation_steps,
    world_size: worldSize,
  };
}

/**
 * The recipe state to resume from (null when not resuming), checked against this run's
 * batch; `say` gets "resuming from step N (epoch E) of <dir>" and any warning.
 */
export function loadResumeState(
  keys: ResumeKeys,
  worldSize: number,
  say: (line: string) => void,
): RecipeState | null {
  if (!keys.resume_from_checkpoint) return null;
  const state = loadRecipeStateFor(keys.checkpointer);
  const saved = state.extra?.batch as BatchRecord | undefined;
  if (saved) checkBatch(state, saved, batchRecord(keys, worldSize), keys.allow_changed_batch, say);
  if (logs("INFO")) {
    say(
      `resuming from step ${state.step} (epoch ${state.epoch + 1}) of ` +
        recipeStatePath(keys.checkpointer),
    );
  }
  return state;
}

function checkBatch(
  state: RecipeState,
  was: BatchRecord,
  now: BatchRecord,
  allow: boolean,
  say: (line: string) => void,
): void {
  const globalWas = was.batch_size * was.world_size;
  const globalNow = now.batch_size * now.world_size;
  const gaWas = was.gradient_accumulation_steps, gaNow = now.gradient_accumulation_steps;
  if (globalWas === globalNow && gaWas === gaNow) return;
  const what = `the saved run trained with batch_size=${was.batch_size} on ${was.world_size} ` +
    `process(es) and gradient_accumulation_steps=${gaWas}, this one with ` +
    `batch_size=${now.batch_size} on ${now.world_size} and gradient_accumulation_steps=${gaNow}`;
  if (!allow) {
    throw new TuneError(
      `cannot resume: ${what}; use the saved run's values (same batch_size x world size) ` +
        `or set allow_changed_batch=true`,
    );
  }
  // the same sample of the epoch's order, in micro-batches of the new global batch,
  // rounded down to a whole optimizer step
  const samples = state.dataPosition * globalWas;
  const micro = Math.floor(samples / globalNow);
  state.dataPosition = micro - (micro % gaNow);
  say(
    `warning: ${what}; continuing at sample ${
      state.dataPosition * globalNow
    } of the epoch (allow_changed_batch=true): the lr schedule and the data order ` +
      `only approximate the saved run's`,
  );
}
