/**
 * Row permutations of q/k projections between the two rotary layouts.
 *
 * Meta and llama2.c rotate adjacent pairs (dims 2i, 2i+1) of each head ("interleaved");
 * Hugging Face rotates dim i with dim i + HS/2 ("half"). Hugging Face's
 * convert_llama_weights_to_hf.py turns one into the other by permuting the rows of wq
 * (with n_heads) and wk (with n_kv_heads):
 *   permute(w) = w.view(n_heads, HS/2, 2, cols).transpose(1, 2).reshape(rows, cols)
 * `interleavedToHalf` is exactly that; `halfToInterleaved` is its inverse.
 */
import { type LlamaConfig, rotaryDims } from "../models/llama/config.ts";
import type { RopeLayout } from "../backend/ops.ts";
import { mapTensor, reusableF32, type StateDict } from "../params/state_dict.ts";

function permuteRows(
  src: Float32Array,
  nHeads: number,
  rows: number,
  toHalf: boolean,
  rotary?: number,
): Float32Array {
  const out = new Float32Array(src);
  permuteRowsInto(out, src, nHeads, rows, toHalf, rotary);
  return out;
}

/** Move the rotated rows of `src` to their places in `out` (which holds `src`'s values). */
function permuteRowsInto(
  out: Float32Array,
  src: Float32Array,
  nHeads: number,
  rows: number,
  toHalf: boolean,
  rotary?: number,
): void {
  const cols = src.length / rows;
  const hs = rows / nHeads;
  const rd = rotary ?? hs; // partial rotary: rows rd..hs-1 of a head do not rotate and stay put
  const half = rd / 2;
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const inter = h * hs + 2 * i + j; // row in the interleaved layout
        const halfRow = h * hs + j * half + i; // row in the rotate-half layout
        const [from, to] = toHalf ? [inter, halfRow] : [halfRow, inter];
        out.set(src.subarray(from * cols, (from + 1) * cols), to * cols);
      }
    }
  }
}

/**
 * Meta/llama2.c row order -> Hugging Face row order, for (rows, ...) data with `nHeads` heads;
 * `rotary`: the rotated leading rows of each head (partial rotary; default all).
 */
export function interleavedToHalf(
  data: Float32Array,
  nHeads: number,
  rows: number,
  rotary?: number,
): Float32Array {
  return permuteRows(data, nHeads, rows, true, rotary);
}

/** Hugging Face row order -> Meta/llama2.c row order (inverse of `interleavedToHalf`). */
export function halfToInterleaved(
  data: Float32Array,
  nHeads: number,
  rows: number,
  rotary?: number,
): Float32Array {
  return permuteRows(data, nHeads, rows, false, rotary);
}

const QK = /^layers\.\d+\.attn\.(q|k)_proj\.(weight|bias|lora_b\.weight|magnitude)$/;
/** Qwen3's per-head q/k norm scales (HS): the rows of one head, permuted like each head's. */
const QK_NORM = /^layers\.\d+\.attn\.(q|k)_norm\.scale$/;

/**
 * The state dict with q/k rows (weights, biases, LoRA B matrices, DoRA magnitudes, Qwen3's
 * per-head q/k norm scales) permuted from
 * `cfg.ropeLayout` to `target`. Other tensors are shared, not copied; lazy ones stay lazy (permuted
 * when used). Same layout: returned as is.
 */
export function convertRopeLayout(sd: StateDict, cfg: LlamaConfig, target: RopeLayout): StateDict {
  if (cfg.ropeLayout === target) return sd;
  const out: StateDict = new Map();
  for (const [name, t] of sd) {
    const m = QK.exec(name);
    const norm = QK_NORM.test(name);
    if (!m && !norm) {
      out.set(name, t);
      continue;
    }
    const heads = norm ? 1 : m![1] === "q" ? cfg.nHeads : cfg.nKvHeads;
    const rows = t.shape[0];
    const rd = cfg.partialRotaryFactor === undefined ? undefined : rotaryDims(cfg);
    // in place, from a copy in a reused buffer (a load fills the parameter buffer this way)
    out.set(
      name,
      mapTensor(t, (data) => {
        const src = reusableF32("permute", data.length);
        src.set(data);
        permuteRowsInto(data, src, heads, rows, target === "half", rd);
      }),
    );
  }
  return out;
}
