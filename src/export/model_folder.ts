/**
 * The model of a checkpoint folder, whatever format it holds: Hugging Face (`config.json` +
 * safetensors), Meta (`params.json` + `consolidated.NN.pth`) or llama2.c (`model.bin`). Used
 * by `tune export` to read what a recipe wrote (or any downloaded model).
 */
import { join } from "node:path";
import { exists } from "../checkpoint/fs.ts";
import { loadHfCheckpoint } from "../checkpoint/hf_checkpoint.ts";
import { readLlama2c } from "../checkpoint/llama2c.ts";
import { loadMetaCheckpoint } from "../checkpoint/meta_checkpoint.ts";
import type { StateDict } from "../params/state_dict.ts";
import { TuneError } from "../errors.ts";
import type { LlamaConfig } from "../models/llama/config.ts";
import { familyOfHfArchitecture, GGUF_FAMILIES, type GgufFamily } from "./gguf_families.ts";

/** A folder's model in tune names (q/k rows "interleaved") and its GGUF family. */
export interface FolderModel {
  stateDict: StateDict;
  config: LlamaConfig;
  family: GgufFamily;
  /** "hf", "meta" or "llama2c". */
  format: string;
}

const LLAMA = GGUF_FAMILIES.find((f) => f.arch === "llama")!;

/** Load the model in `dir`. */
export function loadModelFolder(dir: string): FolderModel {
  if (exists(join(dir, "config.json"))) {
    const r = loadHfCheckpoint(dir, null);
    const arch = String((r.configJson.architectures as string[] | undefined)?.[0]);
    const family = familyOfHfArchitecture(arch);
    if (!family) {
      throw new TuneError(
        `${dir}/config.json: architecture ${arch} has no GGUF mapping in tune; supported: ` +
          GGUF_FAMILIES.flatMap((f) => f.hfArchitectures).join(", "),
      );
    }
    return { stateDict: r.stateDict, config: r.config, family, format: "hf" };
  }
  if (exists(join(dir, "params.json"))) {
    const r = loadMetaCheckpoint(dir, null);
    return { stateDict: r.stateDict, config: r.config, family: LLAMA, format: "meta" };
  }
  if (exists(join(dir, "model.bin"))) {
    const r = readLlama2c(join(dir, "model.bin"));
    return { stateDict: r.stateDict, config: r.config, family: LLAMA, format: "llama2c" };
  }
  throw new TuneError(
    `${dir} holds no model tune reads (config.json + safetensors, params.json + ` +
      `consolidated.00.pth, or llama2.c model.bin); point --checkpoint at a checkpoint folder`,
  );
}
