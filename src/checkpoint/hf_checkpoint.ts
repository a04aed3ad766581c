/**
 * Hugging Face checkpoints: `config.json` plus one `model.safetensors`, or shards listed in
 * `model.safetensors.index.json` (`weight_map`: tensor -> file). Also reads
 * `pytorch_model*.bin` (torch.save zips) through the restricted unpickler. Loading maps
 * names to tune's and permutes the q/k rows (and biases) from the files' rotate-half layout
 * to tune's canonical interleaved layout (see `LlamaConfig.ropeLayout`); saving permutes
 * them back, and writes the same file names and shard layout as the input. Phi-3 checkpoints
 * (Phi3ForCausalLM) have fused qkv_proj / gate_up_proj tensors: split on load, fused on save
 * (phi3_fused.ts).
 */
import { join } from "node:path";
import { TuneError } from "../errors.ts";
import type { LlamaConfig } from "../models/llama/config.ts";
import { atomicWrite } from "./atomic_write.ts";
import { exists } from "./fs.ts";
import { hfConfigJson, type ModelType, PHI3_ARCH, readHfConfig } from "./hf_config.ts";
import { hfToTune, isIgnorableHfKey, tuneToHf } from "./key_mapping.ts";
import { checkPhi3Fused, fusePhi3, isPhi3FusedKey, splitPhi3Fused } from "./phi3_fused.ts";
import { convertRopeLayout } from "./rope_permute.ts";
import {
  lazySafetensors,
  readSafetensorsHeader,
  tensorFileBytes,
  type WriteDtype,
  writeSafetensors,
} from "./safetensors.ts";
import { readPth } from "./torch_pth.ts";
import type { HostTensor, StateDict } from "../params/state_dict.ts";
import { validateStateDict } from "./validate.ts";

/** What a Hugging Face load returns, with what a save needs to mirror the input. */
export interface HfLoaded {
  stateDict: StateDict;
  config: LlamaConfig;
  /** The parsed config.json (kept keys are written back on save). */
  configJson: Record<string, unknown>;
  /** Hugging Face tensor name -> weight file it came from. */
  weightMap: Map<string, string>;
  /** True when the input had a `model.safetensors.index.json`. */
  sharded: boolean;
}

const INDEX = "model.safetensors.index.json";

/** Weight files of `dir`: `files` when given, else the index's shards, else model.safetensors. */
export function resolveHfFiles(
  dir: string,
  files: string[] | null,
): { files: string[]; sharded: boolean } {
  const list = files && files.length ? files : defaultFiles(dir);
  const out: string[] = [];
  let sharded = false;
  for (const f of list) {
    if (f.endsWith(".index.json")) {
      sharded = true;
      const path = join(dir, f);
      let idx: { weight_map?: Record<string, string> };
      try {
        idx = JSON.parse(Deno.readTextFileSync(path));
      } catch {
        throw new TuneError(`${path} is missing or not valid JSON`);
      }
      for (const [tensor, shard] of Object.entries(idx.weight_map ?? {})) {
        if (!out.includes(shard)) {
          if (!exists(join(dir, shard))) {
            throw new TuneError(
              `${path}: shard ${shard} (holding tensor ${tensor}) is missing from ${dir}; ` +
                `download it again`,
            );
          }
          out.push(shard);
        }
      }
    } else {
      if (!exists(join(dir, f))) throw new TuneError(`checkpoint file ${join(dir, f)} not found`);
      out.push(f);
    }
  }
  if (out.length > 1) sharded = true;
  return { files: out, sharded };
}

function defaultFiles(dir: string): string[] {
  if (exists(join(dir, INDEX))) return [INDEX];
  if (exists(join(dir, "model.safetensors"))) return ["model.safetensors"];
  throw new TuneError(
    `${dir} has no model.safetensors or ${INDEX}; set checkpointer.checkpoint_files`,
  );
}

/**
 * Load a Hugging Face checkpoint directory into tune names, q/k rows permuted to the
 * canonical "interleaved" rotary layout (`config.ropeLayout` is "interleaved").
 * safetensors tensors are lazy (see params/state_dict.ts): the headers are read and checked
 * now, each tensor's data when it is used (a model's `loadStateDict` reads it straight into
 * its parameter buffer), so the files must stay in place until then.
 */
export function loadHfCheckpoint(dir: string, files: string[] | null = null): HfLoaded {
  const { json, config } = readHfConfig(join(dir, "config.json"));
  const fused = json.architectures?.[0] === PHI3_ARCH;
  const resolved = resolveHfFiles(dir, files);
  const stateDict: StateDict = new Map();
  const weightMap = new Map<string, string>();
  const fileOf = new Map<string, string>(); // tune name -> path, for messages
  for (const f of resolved.files) {
    const path = join(dir, f);
    // safetensors: lazy tensors, read when the model takes them (straight into its buffer)
    const tensors = f.endsWith(".safetensors") ? lazySafetensors(path) : readPth(path);
    for (const [hfName, t] of tensors) {
      if (isIgnorableHfKey(hfName)) continue;
      if (fused && isPhi3FusedKey(hfName)) {
        for (const [part, v] of splitPhi3Fused(hfName, t, config, path)) {
          stateDict.set(part, v);
          fileOf.set(part, path);
        }
        weightMap.set(hfName, f);
        continue;
      }
      const name = hfToTune(hfName, config);
      if (!name) {
        throw new TuneError(`${path}: unexpected tensor ${hfName} for a Llama-family model`);
      }
      if (name === "output.weight" && config.tiedEmbeddings) continue; // tied copy
      stateDict.set(name, t);
      weightMap.set(hfName, f);
      fileOf.set(name, path);
    }
  }
  if (fused) checkPhi3Fused(stateDict, config, dir);
  validateStateDict(stateDict, config, (n) => fileOf.get(n) ?? dir);
  // The files hold rotate-half rows (config.ropeLayout "half"); tune runs interleaved.
  const interleaved = convertRopeLayout(stateDict, config, "interleaved");
  return {
    stateDict: interleaved,
    config: { ...config, ropeLayout: "interleaved" },
    configJson: json,
    weightMap,
    sharded: resolved.sharded,
  };
}

/** Shape and dtype of every tensor of an HF checkpoint, without reading the data. */
export function inspectHfCheckpoint(
  dir: string,
  files: string[] | null = null,
): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const f of resolveHfFiles(dir, files).files) {
    if (!f.endsWith(".safetensors")) continue;
    for (const e of readSafetensorsHeader(join(dir, f)).entries) out.set(e.name, e.shape);
  }
  return out;
}

/** Options of `saveHfCheckpoint`. */
export interface HfSaveOptions {
  /** Tensor -> file from the load, to keep the input's shard layout. */
  weightMap?: Map<string, string>;
  /** Write an index json even for one file (the input had one). */
  sharded?: boolean;
  /** The input's config.json, whose extra keys are kept. */
  configJson?: Record<string, unknown>;
  modelType?: ModelType;
  /** File dtype: "source" keeps each tensor's (default). */
  dtype?: WriteDtype;
  /** Shard size when there is no weight map (default 5 GB as transformers). */
  maxShardBytes?: number;
}

/**
 * Write `sd` (tune names, layout `cfg.ropeLayout`) as a Hugging Face checkpoint into `dir`.
 * Phi-3 (the input config.json's architecture, else `modelType` PHI3_MINI) is written fused.
 */
export function saveHfCheckpoint(
  dir: string,
  sd: StateDict,
  cfg: LlamaConfig,
  options: HfSaveOptions = {},
): string[] {
  const half = convertRopeLayout(sd, cfg, "half");
  const byFile = new Map<string, [string, HostTensor][]>();
  const dtype = options.dtype ?? "source";
  const baseArch = (options.configJson?.architectures as string[] | undefined)?.[0];
  const phi3 = baseArch
    ? baseArch === PHI3_ARCH
    : options.modelType === "PHI3_MINI" || options.modelType === "PHI4";
  const named: [string, HostTensor][] = phi3 ? fusePhi3(half) : [];
  for (const [name, t] of phi3 ? [] : half) {
    const hf = tuneToHf(name, cfg);
    if (!hf) throw new Error(`no Hugging Face name for ${name}`);
    named.push([hf, t]);
  }
  if (options.weightMap && options.weightMap.size) {
    const files = [...new Set(options.weightMap.values())];
    for (const [hf, t] of named) {
      const f = options.weightMap.get(hf) ?? files[files.length - 1];
      if (!byFile.has(f)) byFile.set(f, []);
      byFile.get(f)!.push([hf, t]);
    }
  } else {
    const max = options.maxShardBytes ?? 5e9;
    const shards: [string, HostTensor][][] = [[]];
    let size = 0;
    for (const e of named) {
      const b = tensorFileBytes(e[1], dtype);
      if (size > 0 && size + b > max) (shards.push([]), (size = 0));
      shards[shards.length - 1].push(e);
      size += b;
    }
    const n = shards.length;
    shards.forEach((s, i) => {
      const f = n === 1
        ? "model.safetensors"
        : `model-${String(i + 1).padStart(5, "0")}-of-${String(n).padStart(5, "0")}.safetensors`;
      byFile.set(f, s);
    });
  }
  let total = 0;
  const weightMap: Record<string, string> = {};
  for (const [f, tensors] of byFile) {
    writeSafetensors(join(dir, f), tensors, { dtype, metadata: { format: "pt" } });
    for (const [hf, t] of tensors) {
      weightMap[hf] = f;
      total += tensorFileBytes(t, dtype);
    }
  }
  const written = [...byFile.keys()];
  if (byFile.size > 1 || options.sharded) {
    atomicWrite(
      join(dir, INDEX),
      JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + "\n",
    );
    written.push(INDEX);
  }
  const firstDtype = [...sd.values()][0]?.sourceDtype;
  const torchDtype = dtype === "source"
    ? (firstDtype === "bf16" ? "bfloat16" : firstDtype === "f16" ? "float16" : "float32")
    : ({ f32: "float32", bf16: "bfloat16", f16: "float16" } as const)[dtype];
  const json = hfConfigJson(cfg, {
    base: options.configJson,
    modelType: options.modelType,
    torchDtype,
  });
  atomicWrite(join(dir, "config.json"), JSON.stringify(json, null, 2) + "\n");
  written.push("config.json");
  return written;
}
