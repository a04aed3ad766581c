/**
 * Checkpointers, torchtune-style: one object per run that loads the starting weights
 * (and, on resume, the adapter and recipe state) and saves each epoch.
 *
 * Output layout (under `output_dir`):
 *   epoch_<N>/            model weights in the input's format (+ config.json / params.json),
 *                         and for LoRA runs adapter_model.safetensors + adapter_config.json
 *   recipe_state/         recipe_state.safetensors + recipe_state.json of the latest save
 * Every file is written to a temporary name and renamed.
 */
import { join } from "node:path";
import { TuneError } from "../errors.ts";
import type { LlamaConfig } from "../models/llama/config.ts";
import type { LoraConfig } from "../models/model_spec.ts";
import type { ModelType } from "./hf_config.ts";
import { loadHfCheckpoint, saveHfCheckpoint } from "./hf_checkpoint.ts";
import { loadMetaCheckpoint, saveMetaCheckpoint } from "./meta_checkpoint.ts";
import { loadPeftAdapter, savePeftAdapter } from "./peft.ts";
import { loadRecipeState, type RecipeState, saveRecipeState } from "./recipe_state.ts";
import type { StateDict } from "./state_dict.ts";

/** What `load()` gives a recipe. */
export interface LoadedCheckpoint {
  /** Base weights in tune names, q/k rows in `config.ropeLayout`. */
  stateDict: StateDict;
  /** Architecture read from the files (config.json / params.json / .bin header). */
  config: LlamaConfig;
  /** LoRA weights (tune names) when `adapter_checkpoint` is set, else null. */
  adapter: StateDict | null;
  /** Recipe state when resuming (`resume_from_checkpoint` or `recipe_checkpoint`), else null. */
  recipeState: RecipeState | null;
}

/** What a recipe hands `save()`. */
export interface SaveRequest {
  /** Full weights to write (for LoRA runs: the merged weights, see `mergeLora`); omit for adapter-only saves. */
  stateDict?: StateDict;
  /** Config of `stateDict` (default: the loaded one); its ropeLayout says how q/k rows lie. */
  config?: LlamaConfig;
  /** LoRA tensors (tune names) and settings, written as a PEFT adapter. */
  adapter?: { stateDict: StateDict; lora: LoraConfig };
  /** Written to `<output_dir>/recipe_state/` for resume. */
  recipeState?: RecipeState;
  epoch: number;
  /** Directory name under output_dir (default `epoch_<epoch>`), e.g. `step_<N>` for mid-epoch saves. */
  dirName?: string;
}

/** A loaded-then-saving checkpointer. */
export interface Checkpointer {
  load(): LoadedCheckpoint;
  /** Returns the directory written (`<output_dir>/epoch_<N>`). */
  save(request: SaveRequest): string;
}

/** torchtune's checkpointer keys, parsed. */
export interface CheckpointerOptions {
  checkpointDir: string;
  /** Explicit files, relative to checkpointDir; empty: the format's default files. */
  checkpointFiles: string[];
  outputDir: string;
  modelType: ModelType;
  adapterCheckpoint: string | null;
  recipeCheckpoint: string | null;
  resumeFromCheckpoint: boolean;
}

/**
 * `checkpoint_files` as a list, or torchtune's `{filename_format, max_filename}` form:
 * `{filename_format: "model-{}-of-{}.safetensors", max_filename: "00004"}` gives
 * model-00001-of-00004.safetensors ... model-00004-of-00004.safetensors.
 */
export function expandCheckpointFiles(value: unknown): string[] {
  if (value === null || value === undefined) return [];
  if (typeof value === "string") return [value];
  if (Array.isArray(value)) return value.map(String);
  if (typeof value === "object") {
    const v = value as { filename_format?: string; max_filename?: string | number };
    const fmt = v.filename_format;
    const max = String(v.max_filename ?? "");
    if (!fmt || !/^\d+$/.test(max) || fmt.split("{}").length !== 3) {
      throw new TuneError(
        `checkpointer.checkpoint_files needs filename_format with two {} and a numeric ` +
          `max_filename, e.g. {filename_format: model-{}-of-{}.safetensors, max_filename: "00004"}`,
      );
    }
    const n = Number(max);
    return Array.from({ length: n }, (_, i) => {
      const idx = String(i + 1).padStart(max.length, "0");
      return fmt.replace("{}", idx).replace("{}", max);
    });
  }
  throw new TuneError(`checkpointer.checkpoint_files must be a list of file names`);
}

/** Shared resume/adapter/recipe-state handling; subclasses do the model format. */
abstract class BaseCheckpointer implements Checkpointer {
  protected loadedConfig: LlamaConfig | null = null;
  constructor(readonly options: CheckpointerOptions) {}

  protected abstract loadModel(): { stateDict: StateDict; config: LlamaConfig };
  protected abstract saveModel(dir: string, sd: StateDict, cfg: LlamaConfig): void;

  load(): LoadedCheckpoint {
    const { stateDict, config } = this.loadModel();
    this.loadedConfig = config;
    const o = this.options;
    const adapter = o.adapterCheckpoint
      ? loadPeftAdapter(resolve(o.checkpointDir, o.adapterCheckpoint), config)
      : null;
    const recipeDir = o.recipeCheckpoint
      ? resolve(o.checkpointDir, o.recipeCheckpoint)
      : o.resumeFromCheckpoint
      ? join(o.outputDir, "recipe_state")
      : null;
    const recipeState = recipeDir ? loadRecipeState(recipeDir) : null;
    return { stateDict, config, adapter, recipeState };
  }

  save(request: SaveRequest): string {
    const cfg = request.config ?? this.loadedConfig;
    if (!cfg) throw new Error("Checkpointer.save() needs a config: call load() first or pass one");
    const dir = join(this.options.outputDir, request.dirName ?? `epoch_${request.epoch}`);
    if (request.stateDict) this.saveModel(dir, request.stateDict, cfg);
    if (request.adapter) {
      savePeftAdapter(dir, request.adapter.stateDict, cfg, request.adapter.lora, {
        baseModelNameOrPath: this.options.checkpointDir,
      });
    }
    if (request.recipeState) {
      saveRecipeState(join(this.options.outputDir, "recipe_state"), request.recipeState);
    }
    return dir;
  }
}

function resolve(dir: string, p: string): string {
  return p.startsWith("/") ? p : join(dir, p);
}

/** torchtune.training.FullModelHFCheckpointer: Hugging Face safetensors + config.json. */
export class FullModelHFCheckpointer extends BaseCheckpointer {
  #weightMap: Map<string, string> | undefined;
  #sharded = false;
  #configJson: Record<string, unknown> | undefined;

  protected loadModel() {
    const r = loadHfCheckpoint(
      this.options.checkpointDir,
      this.options.checkpointFiles.length ? this.options.checkpointFiles : null,
    );
    this.#weightMap = r.weightMap;
    this.#sharded = r.sharded;
    this.#configJson = r.configJson;
    return r;
  }

  protected saveModel(dir: string, sd: StateDict, cfg: LlamaConfig) {
    saveHfCheckpoint(dir, sd, cfg, {
      weightMap: this.#weightMap,
      sharded: this.#sharded,
      configJson: this.#configJson,
      modelType: this.options.modelType,
    });
  }
}

/** torchtune.training.FullModelMetaCheckpointer: consolidated.NN.pth + params.json. */
export class FullModelMetaCheckpointer extends BaseCheckpointer {
  protected loadModel() {
    const r = loadMetaCheckpoint(
      this.options.checkpointDir,
      this.options.checkpointFiles.length ? this.options.checkpointFiles : null,
    );
    // Llama 3.2's params.json says use_scaled_rope without the factor, which is 32 there.
    if (
      this.options.modelType === "LLAMA3_2" && r.config.ropeScaling &&
      r.params.rope_scaling_factor === undefined
    ) {
      r.config.ropeScaling.factor = 32;
    }
    return r;
  }

  protected saveModel(dir: string, sd: StateDict, cfg: LlamaConfig) {
    saveMetaCheckpoint(dir, sd, cfg);
  }
}

/** A checkpointer class over explicit load/save functions (e.g. llama2.c's .bin). */
export class FunctionCheckpointer extends BaseCheckpointer {
  constructor(
    options: CheckpointerOptions,
    private readonly loadFn: (
      o: CheckpointerOptions,
    ) => { stateDict: StateDict; config: LlamaConfig },
    private readonly saveFn: (dir: string, sd: StateDict, cfg: LlamaConfig) => void,
  ) {
    super(options);
  }
  protected loadModel() {
    return this.loadFn(this.options);
  }
  protected saveModel(dir: string, sd: StateDict, cfg: LlamaConfig) {
    this.saveFn(dir, sd, cfg);
  }
}
