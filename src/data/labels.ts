/**
 * Tokens (+ mask) -> a training Sample with shifted labels (see types.ts for the convention).
 */
import type { Tokenizer } from "../tokenizers/types.ts";
import { truncate } from "./chat_format.ts";
import { IGNORE_INDEX, type Sample } from "./types.ts";

/**
 * torchtune's SFTTransform: `labels[t] = mask[t + 1] ? -100 : tokens[t + 1]`, last label -100.
 * `mask[i]` true means token i gets no loss (it is never a target).
 */
export function sampleFromMask(tokens: readonly number[], mask: readonly boolean[]): Sample {
  const T = tokens.length;
  if (mask.length !== T) {
    throw new Error(`tokens (${T}) and mask (${mask.length}) differ in length`);
  }
  const t = Int32Array.from(tokens); // (T)
  const labels = new Int32Array(T); // (T)
  for (let i = 0; i + 1 < T; i++) labels[i] = mask[i + 1] ? IGNORE_INDEX : tokens[i + 1];
  if (T > 0) labels[T - 1] = IGNORE_INDEX;
  return { tokens: t, labels };
}

/**
 * torchtune's TextCompletionDataset sample: BOS + text (+ EOS), truncated to max_seq_len - 1
 * tokens as torchtune does (no EOS forced after truncation), every next token a target.
 */
export function textCompletionSample(
  tokenizer: Tokenizer,
  text: string,
  options: { addEos: boolean; maxSeqLen: number | null },
): Sample {
  let ids = tokenizer.encode(text, { bos: true, eos: options.addEos });
  if (options.maxSeqLen !== null) ids = truncate(ids, options.maxSeqLen - 1);
  return sampleFromMask(ids, ids.map(() => false));
}
