/**
 * Padded collation: a list of samples -> one (B, T) batch ready for the model, with right
 * padding (tokens = padId, labels = -100), as torchtune's padded_collate_sft.
 *
 * Labels keep the shifted convention of types.ts: `labels[b * T + t]` is the target of
 * `tokens[b * T + t]`; the loss must not shift them again.
 */
import { IGNORE_INDEX, type Sample } from "./types.ts";

/** A collated batch. */
export interface Batch {
  /** (B, T) token ids, row-major. */
  tokens: Int32Array;
  /** (B, T) targets: the next token or -100. */
  labels: Int32Array;
  /** B */
  batchSize: number;
  /** T */
  seqLen: number;
  /** (B, T) positions inside each packed sample; present when every sample is packed. */
  inputPos?: Int32Array;
  /**
   * (B, T) segment id of each token (one per sample of a pack, from `seqLens`; extra
   * padding gets its own); present when every sample is packed. Attention is block-causal
   * over it.
   */
  segments?: Int32Array;
}

/** Options of `collatePadded`. */
export interface CollateOptions {
  /** Token id written in padding. */
  padId: number;
  /** Round T up to a multiple of this (default 1). */
  padToMultipleOf?: number;
  /** Pad every batch to exactly this T (e.g. max_seq_len, for fixed shapes); must be >= the longest sample. */
  padTo?: number | null;
}

/** Pad samples to a common length T (the longest, rounded up; or `padTo`) and stack them. */
export function collatePadded(samples: readonly Sample[], options: CollateOptions): Batch {
  const B = samples.length;
  if (B === 0) throw new Error("collatePadded: empty batch");
  let longest = 0;
  for (const s of samples) longest = Math.max(longest, s.tokens.length, s.labels.length);
  const multiple = options.padToMultipleOf ?? 1;
  let T = Math.ceil(longest / multiple) * multiple;
  if (options.padTo != null) {
    if (options.padTo < longest) {
      throw new Error(`collatePadded: padTo ${options.padTo} < longest sample ${longest}`);
    }
    T = options.padTo;
  }
  const tokens = new Int32Array(B * T).fill(options.padId); // (B, T)
  const labels = new Int32Array(B * T).fill(IGNORE_INDEX); // (B, T)
  const packed = samples.every((s) => s.inputPos !== undefined);
  const inputPos = packed ? new Int32Array(B * T) : undefined; // (B, T)
  const segments = packed && samples.every((s) => s.seqLens !== undefined)
    ? new Int32Array(B * T)
    : undefined; // (B, T)
  samples.forEach((s, b) => {
    tokens.set(s.tokens, b * T);
    labels.set(s.labels, b * T);
    if (inputPos && s.inputPos) {
      inputPos.set(s.inputPos, b * T);
      // Positions of extra padding continue from the sample's last one.
      const n = s.inputPos.length;
      const last = n > 0 ? s.inputPos[n - 1] : -1;
      for (let t = n; t < T; t++) inputPos[b * T + t] = last + 1 + (t - n);
    }
    if (segments && s.seqLens) {
      let t = 0, id = 0;
      for (const len of s.seqLens) {
        segments.fill(id++, b * T + t, b * T + Math.min(T, t + len));
        t += len;
      }
      if (t < T) segments.fill(id, b * T + t, (b + 1) * T); // extra padding: its own segment
    }
  });
  return {
    tokens,
    labels,
    batchSize: B,
    seqLen: T,
    ...(inputPos ? { inputPos } : {}),
    ...(segments ? { segments } : {}),
  };
}
