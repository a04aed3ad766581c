/**
 * Recipe state for exact resume: optimizer moments (and any other tensors a recipe needs)
 * in `recipe_state.safetensors` (always fp32, so resume is bitwise), and the scalars in
 * `recipe_state.json`: step, epoch, seed, data-order position, lr-scheduler state, RNG
 * state. Both are written through a temporary name; the JSON last, so a crash between the
 * two leaves the previous JSON, whose `tensorsFile` check catches the mismatch.
 */
import { join } from "node:path";
import { TuneError } from "../errors.ts";
import { atomicWrite } from "./atomic_write.ts";
import { readSafetensors, readSafetensorsHeader, writeSafetensors } from "./safetensors.ts";
import type { StateDict } from "../params/state_dict.ts";

/** Everything a recipe needs to continue a run where it stopped. */
export interface RecipeState {
  /** Optimizer steps taken so far. */
  step: number;
  /** Epochs completed (the next epoch to run). */
  epoch: number;
  seed: number;
  /** Position in the epoch's data order (batches consumed), for mid-epoch resume. */
  dataPosition: number;
  /** lr-scheduler state (e.g. `{ lastStep, baseLr }`), JSON-serialisable. */
  lrScheduler: Record<string, unknown>;
  /** RNG state (e.g. the generator's internal words), JSON-serialisable. */
  rng: unknown;
  /** Tensors: optimizer moments such as `m.<param>`, `v.<param>`, saved as fp32. */
  tensors: StateDict;
  /** Free-form extras (config hash, total tokens, ...). */
  extra?: Record<string, unknown>;
}

const TENSORS = "recipe_state.safetensors";
const JSON_FILE = "recipe_state.json";

/** Write `state` into `dir` (recipe_state.safetensors + recipe_state.json). */
export function saveRecipeState(dir: string, state: RecipeState): void {
  const stamp = `${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  writeSafetensors(join(dir, TENSORS), state.tensors, {
    dtype: "f32",
    metadata: { stamp },
  });
  const { tensors: _t, ...scalars } = state;
  atomicWrite(
    join(dir, JSON_FILE),
    JSON.stringify({ format: "tune-recipe-state-1", stamp, ...scalars }, null, 2) + "\n",
  );
}

/** Read the state written by `saveRecipeState` from `dir`. */
export function loadRecipeState(dir: string): RecipeState {
  const jsonPath = join(dir, JSON_FILE);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(Deno.readTextFileSync(jsonPath));
  } catch {
    throw new TuneError(
      `${jsonPath} is missing or not valid JSON; cannot resume (set resume_from_checkpoint=False)`,
    );
  }
  const tensorsPath = join(dir, TENSORS);
  const tensors = readSafetensors(tensorsPath);
  const { stamp, format: _f, ...rest } = json;
  // The stamp ties the two files together: a crash between writing them is caught here.
  const fileStamp = readStamp(tensorsPath);
  if (fileStamp !== stamp) {
    throw new TuneError(
      `${tensorsPath} does not belong to ${jsonPath} (interrupted save?); resume from an earlier checkpoint`,
    );
  }
  return { ...(rest as Omit<RecipeState, "tensors">), tensors };
}

function readStamp(path: string): string | undefined {
  return readSafetensorsHeader(path).metadata?.stamp;
}
