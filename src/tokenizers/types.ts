/** Options of `Tokenizer.encode`. */
export interface EncodeOptions {
  /** Prepend the beginning-of-sequence token (default true). */
  bos?: boolean;
  /** Append the end-of-sequence token (default false). */
  eos?: boolean;
}

/** A text tokenizer; every format (SentencePiece, llama2.c, tiktoken, tokenizer.json) implements it. */
export interface Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  /** Padding id for collation (falls back to eosId or 0 when the format has none). */
  readonly padId: number;
  /** Extra ids that end generation (e.g. Llama 3's <|eot_id|>), eosId included. */
  readonly stopIds: readonly number[];
  encode(text: string, options?: EncodeOptions): number[];
  decode(ids: readonly number[]): string;
}
