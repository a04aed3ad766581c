/**
 * Log-likelihood requests, as lm-evaluation-harness scores multiple-choice tasks: the
 * log-probability of a continuation given a context, summed over the continuation's tokens.
 *
 * Encoding follows the harness's `_encode_pair` with torchtune's eleuther_eval tokenizer
 * wrapper (no BOS or EOS): trailing spaces of the context move to the continuation; the
 * continuation's tokens are those of encode(context + continuation) after the first
 * len(encode(context)) ones. Too long a request keeps its last max_seq_len tokens.
 */
import { collatePadded, IGNORE_INDEX, type Sample } from "../data/mod.ts";
import { TuneError } from "../errors.ts";
import type { LlamaModel } from "../models/llama/mod.ts";
import type { Tokenizer } from "../tokenizers/types.ts";

/** Token ids of a (context, continuation) pair. */
export function encodePair(
  tokenizer: Tokenizer,
  context: string,
  continuation: string,
): { context: number[]; continuation: number[] } {
  const spaces = context.length - context.trimEnd().length;
  if (spaces > 0) {
    continuation = context.slice(context.length - spaces) + continuation;
    context = context.slice(0, context.length - spaces);
  }
  const opts = { bos: false, eos: false };
  const whole = tokenizer.encode(context + continuation, opts);
  const ctx = tokenizer.encode(context, opts);
  return { context: ctx, continuation: whole.slice(ctx.length) };
}

/**
 * A request as a sample whose labels count only the continuation's tokens (shifted-label
 * convention of src/data/types.ts). An empty context starts from `prefixId` (BOS), as the
 * harness does; the row keeps its last `maxLen` tokens.
 */
export function requestSample(
  context: number[],
  continuation: number[],
  maxLen: number,
  prefixId: number,
): Sample {
  if (continuation.length === 0) {
    throw new TuneError("a choice encodes to no tokens; it cannot be scored");
  }
  const ctx = context.length > 0 ? context : [prefixId];
  let all = [...ctx, ...continuation];
  let contStart = ctx.length;
  if (all.length > maxLen) {
    const cut = all.length - maxLen;
    if (cut >= contStart) {
      throw new TuneError(
        `a continuation of ${continuation.length} tokens does not fit max_seq_length ${maxLen}; raise max_seq_length`,
      );
    }
    all = all.slice(cut);
    contStart -= cut;
  }
  const T = all.length;
  const labels = new Int32Array(T).fill(IGNORE_INDEX); // (T)
  for (let t = contStart - 1; t + 1 < T; t++) labels[t] = all[t + 1];
  return { tokens: Int32Array.from(all), labels };
}

/** Log-likelihood of every request (sum over its counted tokens), in the model's (B, T) batches. */
export function scoreSamples(
  model: LlamaModel,
  samples: readonly Sample[],
  padId: number,
): Float64Array {
  const B = model.B, T = model.T;
  const out = new Float64Array(samples.length);
  const filler: Sample = { tokens: Int32Array.of(padId), labels: Int32Array.of(IGNORE_INDEX) };
  for (let i = 0; i < samples.length; i += B) {
    const rows = samples.slice(i, i + B);
    const n = rows.length;
    while (rows.length < B) rows.push(filler);
    const batch = collatePadded(rows, { padId, padTo: T });
    const seqLoss = model.sequenceLosses(batch.tokens, batch.labels); // (B)
    for (let b = 0; b < n; b++) out[i + b] = -seqLoss[b];
  }
  return out;
}
