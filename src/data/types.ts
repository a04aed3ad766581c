/**
 * Types shared by the data pipeline: raw rows, messages, tokenized samples.
 *
 * Label convention (used everywhere in src/data): labels are ALREADY SHIFTED, as in
 * torchtune's current SFTTransform: `labels[t]` is the target for the prediction made at
 * `tokens[t]`, i.e. `labels[t] = tokens[t + 1]`, or -100 (`IGNORE_INDEX`) where that next
 * token is masked (prompt, padding, sample boundary). The last label of every sample is
 * -100. The loss must therefore NOT shift again: loss = CE(logits[t], labels[t]) over the
 * positions with labels[t] != -100.
 */

/** Label value ignored by the loss (PyTorch's cross-entropy `ignore_index`). */
export const IGNORE_INDEX = -100;

/** One raw dataset row (a JSON object, a CSV record or `{text}` for text files). */
export type Row = Record<string, unknown>;

/** Message roles (torchtune's). */
export type Role = "system" | "user" | "assistant" | "ipython" | "tool";

/** One message of a conversation, torchtune's `Message` restricted to text content. */
export interface Message {
  role: Role;
  /** Text pieces; templates add pieces around the content, and each piece is encoded separately. */
  content: string[];
  /** True when the message's tokens get no loss (label -100). */
  masked: boolean;
  /** True when the message ends a turn (Llama 3 writes <|eot_id|>, else <|eom_id|>). */
  eot: boolean;
  /** True when an assistant message is a tool call (Llama 3 prepends <|python_tag|>). */
  ipython?: boolean;
}

/** Which messages are trained on (torchtune's `masking_strategy`). */
export type MaskingStrategy = "train_on_all" | "train_on_assistant" | "train_on_last";

/**
 * One tokenized training sample. `tokens` and `labels` have the same length; see the module
 * doc for the shifted-label convention.
 */
export interface Sample {
  /** (T) token ids. */
  tokens: Int32Array;
  /** (T) target of each position: the next token, or IGNORE_INDEX. */
  labels: Int32Array;
  /**
   * (T) position of each token inside its own sample; only on packed samples (torchtune's
   * `input_pos`). Padding continues counting from the last sample, clamped to T - 1.
   */
  inputPos?: Int32Array;
  /** Lengths of the samples in a pack, padding included as a last entry; only on packed samples. */
  seqLens?: Int32Array;
}

/** The tokenized dataset a recipe trains on. */
export interface TokenizedDataset {
  samples: Sample[];
  /** True when samples are fixed-length packs of `maxSeqLen` tokens. */
  packed: boolean;
  /** Truncation / pack length used, or null when samples were not truncated. */
  maxSeqLen: number | null;
  /** Id used to pad tokens (the tokenizer's padId). */
  padId: number;
  /** Where the rows came from (file paths or Hugging Face repo), for logs. */
  source: string;
  /** Number of raw rows before packing. */
  numRows: number;
}
