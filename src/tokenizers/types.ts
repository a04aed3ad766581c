/** Options of `Tokenizer.encode`. */
export interface EncodeOptions {
  /** Prepend the beginning-of-sequence token (default true; nothing is added when `bosId` is -1). */
  bos?: boolean;
  /** Append the end-of-sequence token (default false). */
  eos?: boolean;
  /**
   * Read special-token text in the input (e.g. `<|eot_id|>`) as that special id. The default
   * follows each format's reference library: false for SentencePiece, llama2.c and tiktoken
   * (torchtune's Llama 3 encodes such text as plain text), true for tokenizer.json (as Hugging
   * Face and torchtune's Qwen2 do).
   */
  parseSpecial?: boolean;
}

/** Options of `Tokenizer.decode`. */
export interface DecodeOptions {
  /** Drop special tokens (BOS, EOS, <|eot_id|>, added special tokens) from the text (default true). */
  skipSpecial?: boolean;
}

/**
 * A prompt template (torchtune.data.PromptTemplate): `tags[role] = [prepend, append]` text
 * added around each message of that role before tokenization, or `chatFormat` for
 * Llama2ChatTemplate, which tune runs as a whole chat format (src/data/chat_format.ts).
 */
export interface PromptTemplate {
  /** The config value it came from, for logs. */
  name: string;
  tags?: Readonly<Record<string, readonly [string, string]>>;
  /** Roles the template refuses (MistralChatTemplate has no system prompt). */
  refuseRoles?: readonly string[];
  /**
   * ChatMLTemplate: a last assistant message with no text gets only its opening tag, so the
   * model continues from there (a generation prompt).
   */
  openEmptyLastAssistant?: boolean;
  chatFormat?: "llama2";
}

/** A checkpoint's Jinja chat template (Hugging Face tokenizer_config.json `chat_template`). */
export interface ChatTemplate {
  /** The Jinja source. */
  template: string;
  /** Values of `bos_token` / `eos_token` in the template's context ("" when the file has none). */
  bosToken: string;
  eosToken: string;
  /** The file it came from, for messages. */
  source: string;
  /**
   * True when set with `tokenizer.chat_template` (hf or a path): chat_format auto renders it
   * even where a built-in format fits. False when found beside a generic tokenizer file:
   * auto renders it only when no built-in format fits.
   */
  force: boolean;
}

/** A text tokenizer; every format (SentencePiece, llama2.c, tiktoken, tokenizer.json) implements it. */
export interface Tokenizer {
  readonly vocabSize: number;
  /** Beginning-of-sequence id, or -1 when the tokenizer has none (e.g. Qwen2). */
  readonly bosId: number;
  readonly eosId: number;
  /** Padding id for collation (falls back to eosId or 0 when the format has none). */
  readonly padId: number;
  /** Extra ids that end generation (e.g. Llama 3's <|eot_id|>), eosId included. */
  readonly stopIds: readonly number[];
  /** Truncation length set on the tokenizer component (torchtune's `max_seq_len`); null/absent: none. */
  readonly maxSeqLen?: number | null;
  /** Special tokens by their text (BOS, EOS, chat markers, reserved tokens), where the format has them. */
  readonly specialTokens?: ReadonlyMap<string, number>;
  /**
   * torchtune's `prompt_template` set on the tokenizer component: tags around each role's
   * message text, or a chat format (src/data/prompt_template.ts); null/absent: none.
   */
  readonly promptTemplate?: PromptTemplate | null;
  /** The checkpoint's Jinja chat template (chat_format hf); null/absent: none. */
  readonly chatTemplate?: ChatTemplate | null;
  encode(text: string, options?: EncodeOptions): number[];
  decode(ids: readonly number[], options?: DecodeOptions): string;
}
