/**
 * Meta checkpoints: `params.json` plus `consolidated.NN.pth` (one per model-parallel rank).
 * Shards are merged the way Meta's model-parallel layers split them: column-parallel
 * weights (wq, wk, wv, w1, w3, output, q/k/v biases) along dim 0, row-parallel weights
 * (wo, w2) along dim 1, the embedding along dim 1 (Llama 2's ParallelEmbedding) or dim 0
 * (Llama 3's VocabParallelEmbedding) as its shard shape says, norms replicated.
 * Saving writes one `consolidated.00.pth` (torch.load(weights_only=True) reads it).
 */
import { join } from "node:path";
import { TuneError } from "../errors.ts";
import type { LlamaConfig } from "../models/llama/config.ts";
import { atomicWrite } from "./atomic_write.ts";
import { isIgnorableMetaKey, metaToTune, tuneToMeta } from "./key_mapping.ts";
import { llamaConfigFromMeta, metaParamsJson } from "./meta_params.ts";
import { convertRopeLayout } from "./rope_permute.ts";
import { type HostTensor, numel, type StateDict } from "../params/state_dict.ts";
import { PthReader, writePth } from "./torch_pth.ts";
import type { FileDtype } from "./dtype.ts";
import { validateStateDict } from "./validate.ts";

/** Concatenate shards along `dim`. */
export function concatAlong(parts: HostTensor[], dim: number): HostTensor {
  const shape = [...parts[0].shape];
  shape[dim] = parts.reduce((s, p) => s + p.shape[dim], 0);
  const outer = numel(shape.slice(0, dim));
  const inner = numel(shape.slice(dim + 1));
  const data = new Float32Array(numel(shape));
  let o = 0;
  for (let a = 0; a < outer; a++) {
    for (const p of parts) {
      const len = p.shape[dim] * inner;
      data.set(p.data.subarray(a * len, (a + 1) * len), o);
      o += len;
    }
  }
  return { shape, data, sourceDtype: parts[0].sourceDtype };
}

function shardDim(metaName: string, shape: number[], paramsDim: number): number | null {
  if (/\.(wo|w2)\.weight$/.test(metaName)) return 1;
  if (/\.(wq|wk|wv|w1|w3)\.(weight|bias)$/.test(metaName) || metaName === "output.weight") return 0;
  if (metaName === "tok_embeddings.weight") return shape[1] === paramsDim ? 0 : 1;
  return null; // replicated (norms)
}

/** Load a Meta checkpoint (`files` default: every consolidated.*.pth of `dir`). */
export function loadMetaCheckpoint(
  dir: string,
  files: string[] | null = null,
): { stateDict: StateDict; config: LlamaConfig; params: Record<string, unknown> } {
  const paramsPath = join(dir, "params.json");
  let params: Record<string, unknown>;
  try {
    params = JSON.parse(Deno.readTextFileSync(paramsPath));
  } catch {
    throw new TuneError(`${paramsPath} is missing or not valid JSON; a Meta checkpoint needs it`);
  }
  const list = files && files.length ? files : [...Deno.readDirSync(dir)]
    .map((e) => e.name)
    .filter((n) => /^consolidated\.\d+\.pth$/.test(n))
    .sort();
  if (!list.length) throw new TuneError(`${dir} has no consolidated.*.pth files`);
  const readers: PthReader[] = [];
  try {
    for (const f of list) {
      try {
        Deno.statSync(join(dir, f));
      } catch {
        throw new TuneError(`checkpoint shard ${join(dir, f)} is missing`);
      }
      readers.push(new PthReader(join(dir, f)));
    }
    const sd: StateDict = new Map();
    for (const metaName of readers[0].names()) {
      if (isIgnorableMetaKey(metaName)) continue;
      const name = metaToTune(metaName);
      if (!name) throw new TuneError(`${readers[0].path}: unexpected tensor ${metaName}`);
      const parts = readers.map((r) => r.read(metaName));
      const dim = shardDim(metaName, parts[0].shape, params.dim as number);
      sd.set(name, parts.length === 1 || dim === null ? parts[0] : concatAlong(parts, dim));
    }
    const emb = sd.get("tok_embeddings.weight");
    const w1 = sd.get("layers.0.mlp.w1.weight");
    if (!emb || !w1) {
      throw new TuneError(`${dir}: checkpoint lacks tok_embeddings or layers.0 weights`);
    }
    const config = llamaConfigFromMeta(params, {
      vocabSize: emb.shape[0],
      hiddenDim: w1.shape[0],
      tied: !sd.has("output.weight"),
      qkvBias: sd.has("layers.0.attn.q_proj.bias"),
    }, paramsPath);
    validateStateDict(sd, config, dir);
    return { stateDict: sd, config, params };
  } finally {
    for (const r of readers) r.close();
  }
}

/** Write `sd` (layout `cfg.ropeLayout`) as `dir/consolidated.00.pth` + `dir/params.json`. */
export function saveMetaCheckpoint(
  dir: string,
  sd: StateDict,
  cfg: LlamaConfig,
  options: { dtype?: FileDtype | "source" } = {},
): string[] {
  const inter = convertRopeLayout(sd, cfg, "interleaved");
  const named: [string, HostTensor][] = [];
  for (const [name, t] of inter) {
    const m = tuneToMeta(name);
    if (!m) throw new Error(`no Meta name for ${name}`);
    named.push([m, t]);
  }
  writePth(join(dir, "consolidated.00.pth"), named, { dtype: options.dtype ?? "source" });
  atomicWrite(join(dir, "params.json"), JSON.stringify(metaParamsJson(cfg), null, 2) + "\n");
  return ["consolidated.00.pth", "params.json"];
}
