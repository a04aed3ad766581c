/**
 * Tokenizers: SentencePiece BPE `.model`, llama2.c `tokenizer.bin`, tiktoken (Llama 3) and
 * Hugging Face `tokenizer.json` (byte-level and Metaspace BPE), all behind the `Tokenizer`
 * interface of ./types.ts. `loadTokenizer(path)` detects the format from the file contents.
 * @module
 */
export type { DecodeOptions, EncodeOptions, Tokenizer } from "./types.ts";
export {
  checkVocabMatches,
  detectTokenizerFormat,
  loadTokenizer,
  type LoadTokenizerOptions,
  type TokenizerFormat,
} from "./load.ts";
export { SentencePieceTokenizer } from "./sentencepiece.ts";
export { llama3SpecialTokens, type TiktokenOptions, TiktokenTokenizer } from "./tiktoken.ts";
export {
  HfBpeTokenizer,
  type HfTokenizerOptions,
  QWEN2_5_SPECIAL_TOKENS,
  qwen2TokenizerJson,
} from "./hf_tokenizer.ts";
