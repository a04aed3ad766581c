/**
 * Checkpointers, torchtune-style: one object per run that loads the starting weights
 * (and, on resume, the adapter and recipe state) and saves each epoch.
 *
 * Output layout (under `output_dir`):
 *   epoch_<N>/            model weights in the input's format (+ config.json / params.json; the
 *                         Hugging Face checkpointer also copies the input's tokenizer and
 *                         generation files, so the folder loads on its own), and for LoRA runs
 *                         adapter_model.safetensors + adapter_config.json (a PEFT folder)
 *   step_<N>/             the same mid-epoch; LoRA step folders hold the adapter only (see
 *                         `loraSavesMergedModel`)
 *   recipe_state/         recipe_state.safetensors + recipe_state.json of the latest save
 *   .checkpoints.json     the completed epoch_/step_ folders in save order, for
 *                         `keep_last_n_checkpoints`
 * A folder is written under a hidden staging name and renamed into place once complete; only
 * then is the recipe state pointed at it and are older folders beyond `keep_last_n_checkpoints`
 * removed, so a run killed during a save leaves every earlier folder intact.
 * Resume (`resume_from_checkpoint`): the recipe state names the epoch directory its save
 * wrote (`extra.savedDir`). A full fine-tune resumes from that directory's weights. A LoRA
 * run (the directory holds an adapter, or `adapter_checkpoint` is set) resumes from the
 * ORIGINAL base (`checkpoint_dir`/`checkpoint_files`) plus the saved adapter: the
 * directory's model files are the merged weights, and adding the adapter to them again
 * would apply it twice.
 * Every file is written to a temporary name and renamed.
 */
import { basename, dirname, join } from "node:path";
import { TuneError } from "../errors.ts";
import { atomicWrite } from "./atomic_write.ts";
import { copyLoaderFiles } from "./hf_folder.ts";
import type { LlamaConfig } from "../models/llama/config.ts";
import type { LoraConfig } from "../models/model_spec.ts";
import type { ModelType } from "./hf_config.ts";
import { exists } from "./fs.ts";
import { loadHfCheckpoint, saveHfCheckpoint } from "./hf_checkpoint.ts";
import { loadMetaCheckpoint, saveMetaCheckpoint } from "./meta_checkpoint.ts";
import { loadPeftAdapter, savePeftAdapter } from "./peft.ts";
import { loadRecipeState, type RecipeState, saveRecipeState } from "./recipe_state.ts";
import type { StateDict } from "../params/state_dict.ts";

/** What `load()` gives a recipe. */
export interface LoadedCheckpoint {
  /**
   * Base weights in tune names, q/k rows in `config.ropeLayout`: "interleaved" for every
   * built-in checkpointer (tune's canonical layout; Hugging Face files are permuted on load).
   */
  stateDict: StateDict;
  /** Architecture read from the files (config.json / params.json / .bin header). */
  config: LlamaConfig;
  /**
   * LoRA weights (tune names, q/k `lora_b` rows in `config.ropeLayout`) when
   * `adapter_checkpoint` is set, else null.
   */
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

/** Options of `Checkpointer.load()`. */
export interface LoadOptions {
  /**
   * Resume a run (the recipe's top-level `resume_from_checkpoint`; default: the
   * checkpointer's own key): read `<output_dir>/recipe_state/`. Full fine-tune: the weights
   * come from the epoch directory that save wrote, when it holds them. LoRA: the base comes
   * from `checkpoint_dir` (never the saved merged weights) and the adapter from that
   * directory (else `adapter_checkpoint`).
   */
  resumeFromCheckpoint?: boolean;
}

/** A loaded-then-saving checkpointer. */
export interface Checkpointer {
  load(options?: LoadOptions): LoadedCheckpoint;
  /** Returns the directory written (`<output_dir>/epoch_<N>`). */
  save(request: SaveRequest): string;
}

/**
 * Whether a LoRA save writes the merged model next to the adapter: at the end of an epoch
 * only (a step folder holds the adapter and, in recipe_state/, what resume needs), and never
 * with torchtune's `save_adapter_weights_only`.
 */
export function loraSavesMergedModel(o: { isEpochEnd: boolean; adapterOnly: boolean }): boolean {
  return o.isEpochEnd && !o.adapterOnly;
}

/** Extra files a checkpointer writes beside its native format (`output_format`). */
export type OutputFormat = "native" | "gguf";

/** What an output-format writer gets for one folder holding a full model. */
export interface OutputFormatRequest {
  dir: string;
  stateDict: StateDict;
  config: LlamaConfig;
  /** The run's input folder (its tokenizer, ...). */
  checkpointDir: string;
  outputDir: string;
  /** The Hugging Face architecture written (config.json), or null for Meta and llama2.c. */
  hfArchitecture: string | null;
}

/** A writer of an `output_format` other than "native". */
export interface OutputFormatWriter {
  /** Throw a TuneError when the run cannot write this format (called at load, before training). */
  check(checkpointDir: string): void;
  write(request: OutputFormatRequest): void;
}

const OUTPUT_FORMATS = new Map<string, OutputFormatWriter>();

/**
 * Register the writer of an `output_format` value. The area that owns the format registers it
 * (src/export/components.ts: "gguf"), so checkpoints need not import what sits above them.
 */
export function registerOutputFormat(name: OutputFormat, writer: OutputFormatWriter): void {
  OUTPUT_FORMATS.set(name, writer);
}

function outputFormatWriter(name: OutputFormat): OutputFormatWriter {
  const w = OUTPUT_FORMATS.get(name);
  if (!w) {
    throw new Error(`output_format ${name} has no registered writer (import src/components.ts)`);
  }
  return w;
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
  /** Keep only the newest N epoch_/step_ folders of this output_dir (null: keep all). */
  keepLastNCheckpoints?: number | null;
  /** "gguf": also write `model.gguf` (llama.cpp) into every folder that holds a full model. */
  outputFormat?: OutputFormat;
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

  /**
   * Load model weights from `dir` (null: `checkpoint_dir` with `checkpoint_files`; a
   * directory: an earlier save of this checkpointer, default file names).
   */
  protected abstract loadModel(dir: string | null): { stateDict: StateDict; config: LlamaConfig };
  protected abstract saveModel(dir: string, sd: StateDict, cfg: LlamaConfig): void;
  /** Whether `dir` holds model weights written by `saveModel`. */
  protected abstract hasModel(dir: string): boolean;

  load(options: LoadOptions = {}): LoadedCheckpoint {
    this.checkOutputFormat();
    const o = this.options;
    const resume = options.resumeFromCheckpoint ?? o.resumeFromCheckpoint;
    const recipeDir = o.recipeCheckpoint
      ? resolve(o.checkpointDir, o.recipeCheckpoint)
      : resume
      ? join(o.outputDir, "recipe_state")
      : null;
    const recipeState = recipeDir ? loadRecipeState(recipeDir) : null;
    // On resume, the epoch directory of the save that wrote the recipe state supplies the
    // weights (full fine-tune) or the adapter (LoRA) when it has them.
    const savedDir = resume && typeof recipeState?.extra?.savedDir === "string"
      ? recipeState.extra.savedDir
      : null;
    const savedAdapter = savedDir && exists(join(savedDir, ADAPTER_FILE)) ? savedDir : null;
    const adapterPath = savedAdapter ??
      (o.adapterCheckpoint ? resolve(o.checkpointDir, o.adapterCheckpoint) : null);
    // A LoRA save's model files are base + adapter merged: the frozen base is the original.
    const modelDir = savedDir && !adapterPath && this.hasModel(savedDir) ? savedDir : null;
    const { stateDict, config } = this.loadModel(modelDir);
    this.loadedConfig = config;
    const adapter = adapterPath ? loadPeftAdapter(adapterPath, config) : null;
    return { stateDict, config, adapter, recipeState };
  }

  save(request: SaveRequest): string {
    const cfg = request.config ?? this.loadedConfig;
    if (!cfg) throw new Error("Checkpointer.save() needs a config: call load() first or pass one");
    const out = this.options.outputDir;
    const name = request.dirName ?? `epoch_${request.epoch}`;
    const dir = join(out, name);
    const staging = join(out, `.${name}.partial-${Deno.pid}`);
    removeStale(out);
    Deno.mkdirSync(staging, { recursive: true });
    try {
      this.writeFolder(staging, { ...request, config: cfg }, dir);
    } catch (e) {
      Deno.removeSync(staging, { recursive: true }); // a failed save leaves nothing half-written
      throw e;
    }
    publishFolder(staging, dir);
    if (request.recipeState) {
      const extra = { ...(request.recipeState.extra ?? {}), savedDir: dir };
      saveRecipeState(join(out, "recipe_state"), {
        ...request.recipeState,
        extra,
      });
    }
    recordAndPrune(out, name, this.options.keepLastNCheckpoints ?? null);
    return dir;
  }

  /**
   * Write everything of one save into `dir` (a staging folder renamed to `finalDir` once
   * this returns). `request.config` is set.
   */
  protected writeFolder(dir: string, request: SaveRequest, _finalDir: string): void {
    const cfg = request.config!;
    if (request.stateDict) {
      this.saveModel(dir, request.stateDict, cfg);
      const format = this.options.outputFormat ?? "native";
      if (format !== "native") {
        outputFormatWriter(format).write({
          dir,
          stateDict: request.stateDict,
          config: cfg,
          checkpointDir: this.options.checkpointDir,
          outputDir: this.options.outputDir,
          hfArchitecture: this.hfArchitecture(dir),
        });
      }
    }
    if (request.adapter) {
      savePeftAdapter(dir, request.adapter.stateDict, cfg, request.adapter.lora, {
        baseModelNameOrPath: this.options.checkpointDir,
      });
    }
  }

  /** The Hugging Face architecture `saveModel` wrote into `dir` (null: not a Hugging Face folder). */
  protected hfArchitecture(_dir: string): string | null {
    return null;
  }

  /** Refuse an output_format early (before training) when the run cannot write it. */
  protected checkOutputFormat(): void {
    const format = this.options.outputFormat ?? "native";
    if (format !== "native") outputFormatWriter(format).check(this.options.checkpointDir);
  }
}

const CHECKPOINT_DIR = /^(epoch|step)_\d+$/;
const INDEX_FILE = ".checkpoints.json";

/** Remove staging folders of saves that never finished (a killed run). */
function removeStale(out: string): void {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(out)];
  } catch {
    return;
  }
  for (const e of entries) {
    const m = /^\..+\.(partial|old)-(\d+)$/.exec(e.name);
    if (e.isDirectory && m && Number(m[2]) !== Deno.pid) {
      Deno.removeSync(join(out, e.name), { recursive: true });
    }
  }
}

/** Rename a complete staging folder into place (replacing an earlier save of the same name). */
function publishFolder(staging: string, dir: string): void {
  if (exists(dir)) {
    const old = join(dirname(dir), `.${basename(dir)}.old-${Deno.pid}`);
    Deno.renameSync(dir, old);
    Deno.renameSync(staging, dir);
    Deno.removeSync(old, { recursive: true });
  } else {
    Deno.renameSync(staging, dir);
  }
}

/** Append `name` to the completed list, then delete the folders beyond the newest `keep`. */
function recordAndPrune(out: string, name: string, keep: number | null): void {
  const path = join(out, INDEX_FILE);
  let done: string[] = [];
  try {
    done = JSON.parse(Deno.readTextFileSync(path)).completed ?? [];
  } catch { /* first save */ }
  done = [...done.filter((d) => d !== name), name];
  const drop = keep !== null && CHECKPOINT_DIR.test(name)
    ? done.slice(0, Math.max(0, done.length - keep))
    : [];
  const kept = done.filter((d) => !drop.includes(d));
  atomicWrite(path, JSON.stringify({ completed: kept }, null, 2) + "\n");
  for (const d of drop) {
    if (CHECKPOINT_DIR.test(d) && exists(join(out, d))) {
      Deno.removeSync(join(out, d), { recursive: true });
    }
  }
}

const ADAPTER_FILE = "adapter_model.safetensors";

function resolve(dir: string, p: string): string {
  return p.startsWith("/") ? p : join(dir, p);
}

/**
 * torchtune.training.FullModelHFCheckpointer: Hugging Face safetensors + config.json.
 * Loads q/k rows into the interleaved layout and writes them back rotate-half.
 */
export class FullModelHFCheckpointer extends BaseCheckpointer {
  #weightMap: Map<string, string> | undefined;
  #sharded = false;
  #configJson: Record<string, unknown> | undefined;

  protected hasModel(dir: string): boolean {
    return exists(join(dir, "config.json")) &&
      (exists(join(dir, "model.safetensors")) || exists(join(dir, "model.safetensors.index.json")));
  }

  protected loadModel(dir: string | null) {
    const files = this.options.checkpointFiles;
    const r = dir ? loadHfCheckpoint(dir, null) : loadHfCheckpoint(
      this.options.checkpointDir,
      files.length ? files : null,
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

  /** Every folder also gets the input's tokenizer and generation files (hf_folder.ts). */
  protected override writeFolder(dir: string, request: SaveRequest, finalDir: string): void {
    super.writeFolder(dir, request, finalDir);
    copyLoaderFiles(this.options.checkpointDir, dir);
  }

  protected override hfArchitecture(dir: string): string | null {
    return JSON.parse(Deno.readTextFileSync(join(dir, "config.json"))).architectures?.[0] ?? null;
  }
}

/** torchtune.training.FullModelMetaCheckpointer: consolidated.NN.pth + params.json. */
export class FullModelMetaCheckpointer extends BaseCheckpointer {
  protected hasModel(dir: string): boolean {
    return exists(join(dir, "consolidated.00.pth")) && exists(join(dir, "params.json"));
  }

  protected loadModel(dir: string | null) {
    const files = this.options.checkpointFiles;
    const r = dir
      ? loadMetaCheckpoint(dir, null)
      : loadMetaCheckpoint(this.options.checkpointDir, files.length ? files : null);
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
    private readonly fns: {
      /** Load from `dir` (an earlier save) or, when null, from checkpoint_dir/files. */
      load: (
        o: CheckpointerOptions,
        dir: string | null,
      ) => { stateDict: StateDict; config: LlamaConfig };
      save: (dir: string, sd: StateDict, cfg: LlamaConfig) => void;
      hasModel: (dir: string) => boolean;
    },
  ) {
    super(options);
  }
  protected hasModel(dir: string): boolean {
    return this.fns.hasModel(dir);
  }
  protected loadModel(dir: string | null) {
    return this.fns.load(this.options, dir);
  }
  protected saveModel(dir: string, sd: StateDict, cfg: LlamaConfig) {
    this.fns.save(dir, sd, cfg);
  }
}
