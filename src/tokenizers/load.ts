/** Loading a tokenizer file of any supported format, detected from its contents. */
import { TuneError } from "../errors.ts";
import { HfBpeTokenizer, type HfTokenizerOptions } from "./hf_tokenizer.ts";
import { llama2cSpec, tryParseLlama2cTokenizer } from "./llama2c.ts";
import { SentencePieceTokenizer } from "./sentencepiece.ts";
import { parseSentencePieceModel } from "./sentencepiece_model.ts";
import { parseTiktoken, type TiktokenOptions, TiktokenTokenizer } from "./tiktoken.ts";
import type { Tokenizer } from "./types.ts";

/** The formats `loadTokenizer` recognizes. */
export type TokenizerFormat = "sentencepiece" | "llama2c" | "tiktoken" | "tokenizer.json";

/** Options of `loadTokenizer`. */
export interface LoadTokenizerOptions {
  /** Special tokens and pattern of a tiktoken file (default Llama 3's). */
  tiktoken?: TiktokenOptions;
  /** Special-token roles of a tokenizer.json (default from the file and tokenizer_config.json beside it). */
  hf?: HfTokenizerOptions;
}

const FORMATS_HINT =
  "expected a SentencePiece tokenizer.model, a llama2.c tokenizer.bin, a tiktoken tokenizer.model (Llama 3) or a tokenizer.json";

/** Read a file, turning a missing or unreadable file into a one-line TuneError. */
export function readTokenizerFile(path: string): Uint8Array {
  try {
    return Deno.readFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new TuneError(
        `tokenizer file ${path} not found; set tokenizer.path to the tokenizer file of your checkpoint`,
      );
    }
    if (e instanceof Deno.errors.IsADirectory) {
      throw new TuneError(
        `tokenizer path ${path} is a directory; point tokenizer.path at the tokenizer file in it (tokenizer.model, tokenizer.bin or tokenizer.json)`,
      );
    }
    throw new TuneError(
      `tokenizer file ${path} cannot be read (${(e as Error).message}); check its permissions`,
    );
  }
}

/** Which format `bytes` hold, or undefined. */
export function detectTokenizerFormat(bytes: Uint8Array): TokenizerFormat | undefined {
  let i = 0;
  while (
    i < bytes.length &&
    (bytes[i] === 0x20 || bytes[i] === 0x0a || bytes[i] === 0x0d || bytes[i] === 0x09)
  ) i++;
  if (bytes[i] === 0x7b) return "tokenizer.json"; // "{"
  if (tryParseLlama2cTokenizer(bytes)) return "llama2c";
  const head = new TextDecoder().decode(bytes.subarray(0, 256));
  if (/^[A-Za-z0-9+/]+={0,2} \d+\r?\n/.test(head)) return "tiktoken";
  if (bytes[0] === 0x0a) return "sentencepiece"; // ModelProto field 1 (a piece), length-delimited
  return undefined;
}

function corrupt(path: string, what: string): TuneError {
  return new TuneError(
    `tokenizer file ${path} is corrupt or not a tokenizer (${what}); ${FORMATS_HINT}`,
  );
}

/** Parse the JSON file beside `path` named `name`, if it exists. */
function readSibling(path: string, name: string): unknown {
  const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/") + 1) : "";
  let text: string;
  try {
    text = Deno.readTextFileSync(dir + name);
  } catch {
    return undefined;
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new TuneError(`${dir + name} is not valid JSON; fix or remove it`);
  }
}

/** Build a tokenizer from bytes of a known format (`path` is for messages and sibling files). */
export function tokenizerFromBytes(
  bytes: Uint8Array,
  path: string,
  options: LoadTokenizerOptions = {},
): Tokenizer {
  const format = detectTokenizerFormat(bytes);
  switch (format) {
    case "llama2c":
      return new SentencePieceTokenizer(llama2cSpec(tryParseLlama2cTokenizer(bytes)!, path));
    case "sentencepiece":
      return new SentencePieceTokenizer(parseSentencePieceModel(bytes, path));
    case "tiktoken":
      return new TiktokenTokenizer(
        parseTiktoken(new TextDecoder().decode(bytes), path),
        path,
        options.tiktoken,
      );
    case "tokenizer.json": {
      let json: unknown;
      try {
        json = JSON.parse(new TextDecoder().decode(bytes));
      } catch (e) {
        throw corrupt(path, `invalid JSON: ${(e as Error).message}`);
      }
      const config = readSibling(path, "tokenizer_config.json");
      return new HfBpeTokenizer(json, path, config, options.hf);
    }
    default:
      throw corrupt(path, bytes.length === 0 ? "empty file" : "unrecognized contents");
  }
}

/**
 * Load a tokenizer file, detecting its format from its contents: SentencePiece `.model`
 * (protobuf), llama2.c `tokenizer.bin`, tiktoken (Llama 3 `tokenizer.model`) or Hugging Face
 * `tokenizer.json` (with `tokenizer_config.json` beside it when present). A missing or corrupt
 * file is a one-line TuneError naming it.
 */
export function loadTokenizer(path: string, options: LoadTokenizerOptions = {}): Tokenizer {
  return tokenizerFromBytes(readTokenizerFile(path), path, options);
}

/**
 * Throw a TuneError when `tokenizer` produces ids the model's embedding cannot hold
 * (tokenizer vocab larger than the model's). A model vocab larger than the tokenizer's is
 * normal (padded embeddings, e.g. Qwen2.5) and passes.
 */
export function checkVocabMatches(
  tokenizer: Tokenizer,
  modelVocabSize: number,
  path: string,
): void {
  if (tokenizer.vocabSize > modelVocabSize) {
    throw new TuneError(
      `tokenizer and model vocab mismatch: tokenizer ${path} has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${modelVocabSize}; use the tokenizer that came with the checkpoint`,
    );
  }
}
