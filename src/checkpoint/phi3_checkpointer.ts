/**
 * torchtune.training.FullModelHFCheckpointer with `model_type: PHI3_MINI`. The model files go
 * through hf_checkpoint.ts (fused qkv_proj / gate_up_proj split on load, fused on save). LoRA
 * adapters are NOT written in PEFT format, as torchtune does for Phi-3 Mini (PEFT would target
 * the fused qkv_proj / gate_up_proj, which tune's and torchtune's separate q/k/v and w1/w3
 * adapters do not map onto): the adapter goes to `adapter_model.pt` in torchtune's own names
 * (torch.save zip, readable by torchtune's `adapter_checkpoint`), q/k `lora_b` rows in the
 * rotate-half layout torchtune's Phi-3 runs, and no adapter_config.json. Merged full weights
 * are written fused as usual. `adapter_checkpoint` reads such a file (or a directory with one).
 */
import { join } from "node:path";
import { TuneError } from "../errors.ts";
import type { LlamaConfig } from "../models/llama/config.ts";
import {
  FullModelHFCheckpointer,
  type LoadedCheckpoint,
  type LoadOptions,
  type SaveRequest,
} from "./checkpointer.ts";
import { exists } from "./fs.ts";
import { PHI3_ARCH } from "./hf_config.ts";
import { convertRopeLayout } from "./rope_permute.ts";
import type { StateDict } from "../params/state_dict.ts";
import { readPth, writePth } from "./torch_pth.ts";

/** torchtune's adapter file name for models without PEFT support. */
export const PHI3_ADAPTER_FILE = "adapter_model.pt";

const LORA_NAME =
  /^(layers\.\d+\.(attn\.(q|k|v|output)_proj|mlp\.w[123])|output)\.lora_[ab]\.weight$/;

/** Write `adapter` (tune names, q/k rows in `cfg.ropeLayout`) as torchtune's adapter_model.pt. */
export function savePhi3Adapter(dir: string, adapter: StateDict, cfg: LlamaConfig): string {
  const half = convertRopeLayout(adapter, cfg, "half");
  const path = join(dir, PHI3_ADAPTER_FILE);
  writePth(path, [...half].filter(([n]) => LORA_NAME.test(n)), { dtype: "f32" });
  return path;
}

/** Read a torchtune-format adapter (file, or directory holding adapter_model.pt) into `cfg.ropeLayout`. */
export function loadPhi3Adapter(path: string, cfg: LlamaConfig): StateDict {
  let file = path;
  try {
    if (Deno.statSync(path).isDirectory) file = join(path, PHI3_ADAPTER_FILE);
  } catch {
    throw new TuneError(`adapter checkpoint ${path} not found`);
  }
  if (!file.endsWith(".pt") && !file.endsWith(".bin")) {
    throw new TuneError(
      `adapter checkpoint ${file}: Phi-3 adapters are read in torchtune's format ` +
        `(${PHI3_ADAPTER_FILE}, as tune and torchtune save them), not PEFT safetensors`,
    );
  }
  if (!exists(file)) throw new TuneError(`adapter checkpoint ${file} not found`);
  const sd: StateDict = new Map();
  for (const [name, t] of readPth(file)) {
    if (!LORA_NAME.test(name)) {
      throw new TuneError(`${file}: unexpected adapter tensor ${name} (expected tune LoRA names)`);
    }
    sd.set(name, t);
  }
  return convertRopeLayout(sd, { ...cfg, ropeLayout: "half" }, cfg.ropeLayout);
}

/** FullModelHFCheckpointer for `model_type: PHI3_MINI` and `PHI4` (Phi-4 is the Phi-3 architecture); see the module doc. */
export class Phi3MiniHFCheckpointer extends FullModelHFCheckpointer {
  #adapterCheckpoint: string | null;
  #noted = false;

  constructor(options: ConstructorParameters<typeof FullModelHFCheckpointer>[0]) {
    // The base class would read adapter_checkpoint as PEFT; this class reads it itself.
    super({ ...options, adapterCheckpoint: null });
    this.#adapterCheckpoint = options.adapterCheckpoint;
  }

  protected override loadModel(dir: string | null) {
    const r = super.loadModel(dir);
    const arch = (r.configJson.architectures as string[] | undefined)?.[0];
    if (arch !== PHI3_ARCH) {
      throw new TuneError(
        `checkpointer.model_type is ${this.options.modelType} but ${
          dir ?? this.options.checkpointDir
        }/config.json ` +
          `says ${arch}; set model_type to the checkpoint's family`,
      );
    }
    return r;
  }

  /** A LoRA save's model files are merged weights; its base is the original checkpoint. */
  protected override hasModel(dir: string): boolean {
    return !exists(join(dir, PHI3_ADAPTER_FILE)) && super.hasModel(dir);
  }

  override load(options: LoadOptions = {}): LoadedCheckpoint {
    const r = super.load(options);
    const o = this.options;
    const resume = options.resumeFromCheckpoint ?? o.resumeFromCheckpoint;
    const savedDir = resume && typeof r.recipeState?.extra?.savedDir === "string"
      ? r.recipeState.extra.savedDir
      : null;
    const saved = savedDir && exists(join(savedDir, PHI3_ADAPTER_FILE)) ? savedDir : null;
    const given = this.#adapterCheckpoint;
    const path = saved ??
      (given ? (given.startsWith("/") ? given : join(o.checkpointDir, given)) : null);
    return { ...r, adapter: path ? loadPhi3Adapter(path, r.config) : null };
  }

  protected override writeFolder(dir: string, request: SaveRequest, finalDir: string): void {
    super.writeFolder(dir, { ...request, adapter: undefined }, finalDir);
    if (request.adapter) {
      savePhi3Adapter(dir, request.adapter.stateDict, request.config!);
      if (!this.#noted) {
        console.error(
          `note: Phi-3 Mini adapters are saved in torchtune's format (${PHI3_ADAPTER_FILE}), not ` +
            `PEFT (as torchtune does); the merged model files in ${finalDir} load in transformers`,
        );
        this.#noted = true;
      }
    }
  }
}
