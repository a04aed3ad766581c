/**
 * The decoding loop: prefill the prompts into the KV cache, then one decode step per new
 * token, choosing each with `sampleToken`. Several prompts run as a batch (B sequences
 * side by side, of any lengths); a sequence that produced a stop token is finished and
 * its later steps are skipped where the backend can. Without the KV cache every step recomputes the whole sequence
 * (same tokens, slower), as torchtune's enable_kv_cache=False.
 */
import type { Backend } from "../backend/ops.ts";
import { TuneError } from "../errors.ts";
import type { LlamaModel } from "../models/llama/model.ts";
import type { SeededRandom } from "../params/random.ts";
import {
  checkSamplingOptions,
  sampleToken,
  type SamplingOptions,
  SamplingScratch,
} from "./sampling.ts";

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
  /**
   * Called with the raw logits (V) sequence `b`'s next token is drawn from (e.g. GRPO's
   * entropy); the array is reused for the next step, so copy what must outlive the call.
   */
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
 * Generate continuations of `prompts` (B prompts, token ids incl. BOS; their lengths may
 * differ). The model's weights must be loaded; its KV caches are (re)allocated here.
 *
 * Prompts of different lengths share one position per step, without padding: the batch
 * prefills the shortest prompt's length, then each decode step feeds every sequence its
 * next prompt token (logits not read) or its last new token, so a shorter prompt starts
 * sampling earlier and every sequence attends only to its own tokens. A sequence that hit
 * a stop token or `maxNewTokens` is finished; the decode steps mark it so the fused
 * decoder skips its attention. Prompts of one length run exactly as before (one prefill).
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
  if (prompts.some((p) => p.length === 0)) {
    throw new TuneError("the prompt is empty after tokenization; give a prompt text");
  }
  if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 0) {
    throw new TuneError(`max_new_tokens must be a non-negative integer, got ${o.maxNewTokens}`);
  }
  const kv = o.kvCache ?? true;
  const lens = prompts.map((p) => p.length);
  const P0 = Math.min(...lens), P1 = Math.max(...lens);
  if (!kv && P0 !== P1) return byLength(model, backend, prompts, o);
  const V = model.cfg.vocabSize;
  const capacity = P1 + o.maxNewTokens;
  const stops = new Set(o.stopIds);
  const out: number[][] = prompts.map(() => []);
  const finish: ("stop" | "length")[] = prompts.map(() => "length");
  const live = new Uint8Array(B).fill(1); // (B) 0 once a sequence is finished
  const seqs = prompts.map((p) => [...p]); // for the no-cache path
  let prefillSeconds = 0;
  let decodeSeconds = 0;
  if (o.maxNewTokens === 0) {
    return { tokens: out, finish, prefillSeconds, decodeSeconds, newTokens: 0 };
  }
  // capacity: the no-cache path reruns the full sequence, so it needs the same room
  model.setupCaches(B, Math.max(1, capacity - 1));

  const scratch = o.temperature > 0 ? new SamplingScratch(V) : undefined;
  const t0 = performance.now();
  const first = Int32Array.from(prompts.flatMap((p) => p.slice(0, P0))); // (B, P0)
  // one host copy of the logits (B, V) for every step: nothing allocated per token
  const logits = backend.download(model.prefill(first)) as Float32Array; // (B, V)
  prefillSeconds = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  const next = new Int32Array(B); // (B) the tokens at position pos + 1
  for (let pos = P0 - 1;; pos++) { // logits are those of position pos
    let running = 0;
    for (let b = 0; b < B; b++) {
      if (live[b] === 0) continue;
      if (pos + 1 < lens[b]) { // still reading its prompt
        next[b] = prompts[b][pos + 1];
        running++;
        continue;
      }
      const row = logits.subarray(b * V, (b + 1) * V); // (V)
      o.onLogits?.(b, row);
      const id = sampleToken(row, o, o.rng, scratch);
      if (stops.has(id)) {
        live[b] = 0;
        finish[b] = "stop";
        continue;
      }
      out[b].push(id);
      seqs[b].push(id);
      next[b] = id;
      o.onToken?.(b, id);
      if (out[b].length === o.maxNewTokens) live[b] = 0;
      else running++;
    }
    if (running === 0) break;
    if (kv) {
      backend.download(model.decodeStep(next, live), logits);
    } else {
      // finished sequences repeat their last token: their logits are not read again
      const len = seqs.reduce((m, s) => Math.max(m, s.length), 0);
      const all = new Int32Array(B * len); // (B, len)
      for (let b = 0; b < B; b++) {
        const s = seqs[b];
        for (let t = 0; t < len; t++) all[b * len + t] = s[Math.min(t, s.length - 1)];
      }
      backend.download(model.prefill(all), logits);
    }
  }
  decodeSeconds = (performance.now() - t1) / 1000;
  const newTokens = out.reduce((n, s) => n + s.length, 0);
  return { tokens: out, finish, prefillSeconds, decodeSeconds, newTokens };
}

/** Without a KV cache, prompts of different lengths run as one batch per length. */
function byLength(
  model: LlamaModel,
  backend: Backend,
  prompts: readonly (readonly number[])[],
  o: GenerateOptions,
): GenerateResult {
  const groups = new Map<number, number[]>(); // prompt length -> sequence indices
  prompts.forEach((p, b) => groups.set(p.length, [...(groups.get(p.length) ?? []), b]));
  const r: GenerateResult = {
    tokens: prompts.map(() => []),
    finish: prompts.map(() => "length"),
    prefillSeconds: 0,
    decodeSeconds: 0,
    newTokens: 0,
  };
  for (const idx of groups.values()) {
    const g = generateTokens(model, backend, idx.map((b) => prompts[b]), {
      ...o,
      onToken: o.onToken && ((k, id) => o.onToken!(idx[k], id)),
      onLogits: o.onLogits && ((k, l) => o.onLogits!(idx[k], l)),
    });
    idx.forEach((b, k) => {
      r.tokens[b] = g.tokens[k];
      r.finish[b] = g.finish[k];
    });
    r.prefillSeconds += g.prefillSeconds;
    r.decodeSeconds += g.decodeSeconds;
    r.newTokens += g.newTokens;
  }
  return r;
}
