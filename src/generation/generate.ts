/**
 * The decoding loop: prefill the prompts into the KV cache, then one decode step per new
 * token, choosing each with `sampleToken`. Several prompts of one length run as a batch
 * (B sequences side by side); a sequence that produced a stop token is finished and its
 * later steps are ignored. Without the KV cache every step recomputes the whole sequence
 * (same tokens, slower), as torchtune's enable_kv_cache=False.
 */
import type { Backend } from "../backend/ops.ts";
import { TuneError } from "../errors.ts";
import type { LlamaModel } from "../models/llama/model.ts";
import type { SeededRandom } from "../params/random.ts";
import { checkSamplingOptions, sampleToken, type SamplingOptions } from "./sampling.ts";

/** Options of `generateTokens`. */
export interface GenerateOptions extends SamplingOptions {
  /** Stop after this many new tokens per sequence. */
  maxNewTokens: number;
  /** Ids that end a sequence (not included in its output). */
  stopIds: readonly number[];
  /** Random draws for sampling (unused when greedy). */
  rng: SeededRandom;
  /** Cache keys and values (default true); false recomputes the sequence at every step. */
  kvCache?: boolean;
  /** Called with each new token of sequence `b` (not for stop tokens). */
  onToken?(b: number, id: number): void;
  /** Called with the raw logits (V) sequence `b`'s next token is drawn from (e.g. GRPO's entropy). */
  onLogits?(b: number, logits: Float32Array): void;
}

/** What `generateTokens` produced, and how fast. */
export interface GenerateResult {
  /** New tokens of each sequence, stop token excluded. */
  tokens: number[][];
  /** Why each sequence ended. */
  finish: ("stop" | "length")[];
  /** Seconds spent in the prompt pass (prefill). */
  prefillSeconds: number;
  /** Seconds spent producing the new tokens after the first. */
  decodeSeconds: number;
  /** Total new tokens over all sequences. */
  newTokens: number;
}

/**
 * Generate continuations of `prompts` (B prompts of equal length, token ids incl. BOS).
 * The model's weights must be loaded; its KV caches are (re)allocated here.
 */
export function generateTokens(
  model: LlamaModel,
  backend: Backend,
  prompts: readonly (readonly number[])[],
  o: GenerateOptions,
): GenerateResult {
  checkSamplingOptions(o);
  const B = prompts.length;
  if (B === 0) throw new Error("generateTokens needs at least one prompt");
  const P = prompts[0].length;
  if (P === 0) throw new TuneError("the prompt is empty after tokenization; give a prompt text");
  if (prompts.some((p) => p.length !== P)) {
    throw new Error("generateTokens: the prompts of one batch must have the same length");
  }
  if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 0) {
    throw new TuneError(`max_new_tokens must be a non-negative integer, got ${o.maxNewTokens}`);
  }
  const V = model.cfg.vocabSize;
  const kv = o.kvCache ?? true;
  const capacity = P + o.maxNewTokens;
  const stops = new Set(o.stopIds);
  const out: number[][] = prompts.map(() => []);
  const finish: ("stop" | "length")[] = prompts.map(() => "length");
  const done = new Array<boolean>(B).fill(false);
  const seqs = prompts.map((p) => [...p]); // for the no-cache path
  let prefillSeconds = 0;
  let decodeSeconds = 0;
  if (o.maxNewTokens === 0) {
    return { tokens: out, finish, prefillSeconds, decodeSeconds, newTokens: 0 };
  }
  // capacity: the no-cache path reruns the full sequence, so it needs the same room
  model.setupCaches(B, Math.max(1, capacity - 1));

  const t0 = performance.now();
  let logits = backend.download(model.prefill(Int32Array.from(prompts.flat()))) as Float32Array; // (B, V)
  prefillSeconds = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  for (let step = 0; step < o.maxNewTokens; step++) {
    const next = new Int32Array(B); // (B)
    for (let b = 0; b < B; b++) {
      if (done[b]) continue;
      const row = logits.subarray(b * V, (b + 1) * V); // (V)
      o.onLogits?.(b, row);
      const id = sampleToken(row, o, o.rng);
      if (stops.has(id)) {
        done[b] = true;
        finish[b] = "stop";
        continue;
      }
      out[b].push(id);
      seqs[b].push(id);
      next[b] = id;
      o.onToken?.(b, id);
    }
    if (done.every((d) => d) || step === o.maxNewTokens - 1) break;
    if (kv) {
      logits = backend.download(model.decodeStep(next)) as Float32Array;
    } else {
      // finished sequences repeat their last token: their logits are not read again
      const len = seqs.reduce((m, s) => Math.max(m, s.length), 0);
      const all = new Int32Array(B * len); // (B, len)
      for (let b = 0; b < B; b++) {
        const s = seqs[b];
        for (let t = 0; t < len; t++) all[b * len + t] = s[Math.min(t, s.length - 1)];
      }
      logits = backend.download(model.prefill(all)) as Float32Array;
    }
  }
  decodeSeconds = (performance.now() - t1) / 1000;
  const newTokens = out.reduce((n, s) => n + s.length, 0);
  return { tokens: out, finish, prefillSeconds, decodeSeconds, newTokens };
}
