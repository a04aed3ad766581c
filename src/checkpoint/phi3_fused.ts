/**
 * Phi-3's fused projections (torchtune.models.phi3._convert_weights): a Hugging Face Phi-3
 * checkpoint stores each layer's q, k and v rows stacked in
 * `model.layers.N.self_attn.qkv_proj.weight` ((NH*HS + 2*KV, C): q rows, then k, then v, as
 * transformers' Phi3Attention slices them) and gate then up rows in
 * `model.layers.N.mlp.gate_up_proj.weight` ((2*H, C): w1 then w3, as Phi3MLP chunks them).
 * Loading splits them into tune's separate q/k/v and w1/w3 (views, no copy); saving stacks
 * them again, so the written file loads in transformers. The row counts come from the config
 * (GQA-safe; torchtune's chunk(3) assumes NH == KV, true for Phi-3 Mini).
 */
import { TuneError } from "../errors.ts";
import type { LlamaConfig } from "../models/llama/config.ts";
import { tuneToHf } from "./key_mapping.ts";
import type { HostTensor, StateDict } from "../params/state_dict.ts";

const QKV = /^model\.layers\.(\d+)\.self_attn\.qkv_proj\.weight$/;
const GATE_UP = /^model\.layers\.(\d+)\.mlp\.gate_up_proj\.weight$/;

/** Whether a Hugging Face name is one of Phi-3's fused tensors. */
export function isPhi3FusedKey(hfName: string): boolean {
  return QKV.test(hfName) || GATE_UP.test(hfName);
}

function rowsOf(t: HostTensor, rows: number[], parts: string[]): [string, HostTensor][] {
  const cols = t.shape[1];
  const out: [string, HostTensor][] = [];
  let at = 0;
  rows.forEach((r, i) => {
    const data = t.data.subarray(at * cols, (at + r) * cols); // (r, C) view
    out.push([parts[i], { shape: [r, cols], data, sourceDtype: t.sourceDtype }]);
    at += r;
  });
  return out;
}

/**
 * tune names and tensors of one fused Phi-3 tensor `hfName` (q, k, v or w1, w3 rows, as
 * views). Throws a one-line TuneError naming `source` when its shape does not fit `cfg`.
 */
export function splitPhi3Fused(
  hfName: string,
  t: HostTensor,
  cfg: LlamaConfig,
  source: string,
): [string, HostTensor][] {
  const hs = cfg.dim / cfg.nHeads;
  const qkv = QKV.exec(hfName);
  const m = qkv ?? GATE_UP.exec(hfName);
  if (!m) throw new Error(`${hfName} is not a fused Phi-3 tensor`);
  const rows = qkv
    ? [cfg.nHeads * hs, cfg.nKvHeads * hs, cfg.nKvHeads * hs]
    : [cfg.hiddenDim, cfg.hiddenDim];
  const want = [rows.reduce((a, b) => a + b, 0), cfg.dim];
  if (t.shape.length !== 2 || t.shape[0] !== want[0] || t.shape[1] !== want[1]) {
    throw new TuneError(
      `${source}: tensor ${hfName} has shape [${t.shape}] but config.json implies [${want}]; ` +
        `check the checkpoint matches its config.json`,
    );
  }
  const p = `layers.${m[1]}.`;
  const parts = qkv
    ? [`${p}attn.q_proj.weight`, `${p}attn.k_proj.weight`, `${p}attn.v_proj.weight`]
    : [`${p}mlp.w1.weight`, `${p}mlp.w3.weight`];
  return rowsOf(t, rows, parts);
}

/**
 * Throw a one-line TuneError naming the first fused tensor a loaded Phi-3 checkpoint lacked
 * (before the generic check, which would name tune's split tensor instead of the file's).
 */
export function checkPhi3Fused(sd: StateDict, cfg: LlamaConfig, dir: string): void {
  for (let i = 0; i < cfg.nLayers; i++) {
    for (
      const [part, name, what] of [
        [
          `layers.${i}.attn.q_proj.weight`,
          `model.layers.${i}.self_attn.qkv_proj.weight`,
          "q, k and v",
        ],
        [`layers.${i}.mlp.w1.weight`, `model.layers.${i}.mlp.gate_up_proj.weight`, "gate and up"],
      ]
    ) {
      if (!sd.has(part)) {
        throw new TuneError(
          `${dir}: tensor ${name} is missing (a Phi-3 checkpoint stores ${what} fused in it); ` +
            `check the checkpoint files are complete`,
        );
      }
    }
  }
}

function concatRows(parts: HostTensor[]): HostTensor {
  const cols = parts[0].shape[1];
  const rows = parts.reduce((n, t) => n + t.shape[0], 0);
  const data = new Float32Array(rows * cols); // (sum of rows, C)
  let at = 0;
  for (const t of parts) {
    data.set(t.data, at);
    at += t.data.length;
  }
  return { shape: [rows, cols], data, sourceDtype: parts[0].sourceDtype };
}

/**
 * `sd` (tune names, rotate-half layout) as Hugging Face Phi-3 tensors: each layer's q/k/v
 * stacked into `qkv_proj` and w1/w3 into `gate_up_proj` (in the place of q_proj and w1), the
 * rest under their Hugging Face names. Throws when a layer lacks a part or has q/k/v biases
 * (Phi-3 has none).
 */
export function fusePhi3(sd: StateDict): [string, HostTensor][] {
  const out: [string, HostTensor][] = [];
  const get = (name: string): HostTensor => {
    const t = sd.get(name);
    if (!t) throw new Error(`Phi-3 save: ${name} is missing from the state dict`);
    return t;
  };
  for (const [name, t] of sd) {
    const m = /^layers\.(\d+)\.(attn\.(q|k|v)_proj\.(weight|bias)|mlp\.w(1|3)\.weight)$/.exec(name);
    if (!m) {
      const hf = tuneToHf(name);
      if (!hf) throw new Error(`no Hugging Face name for ${name}`);
      out.push([hf, t]);
      continue;
    }
    if (m[4] === "bias") {
      throw new TuneError(`Phi-3 checkpoints have no q/k/v biases; ${name} cannot be saved`);
    }
    const p = `layers.${m[1]}.`;
    if (m[3] === "q") {
      const qkv = [t, get(`${p}attn.k_proj.weight`), get(`${p}attn.v_proj.weight`)];
      out.push([`model.layers.${m[1]}.self_attn.qkv_proj.weight`, concatRows(qkv)]);
    } else if (m[5] === "1") {
      const gateUp = [t, get(`${p}mlp.w3.weight`)];
      out.push([`model.layers.${m[1]}.mlp.gate_up_proj.weight`, concatRows(gateUp)]);
    } // k, v and w3 went into their layer's fused tensor
  }
  return out;
}
