/**
 * A checkpoint folder's tokenizer as GGUF metadata (llama.cpp's `tokenizer.ggml.*` keys):
 *
 * - SentencePiece (`tokenizer.model`, or llama2.c's `tokenizer.bin`): model "llama", every
 *   piece with its score and type (SentencePiece's piece types are GGUF's token types:
 *   1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte), unk/bos/eos/pad ids,
 *   `add_space_prefix` from the normalizer; then the tokens Hugging Face adds past the model's
 *   pieces (`added_tokens_decoder` of tokenizer_config.json, or added_tokens.json: Phi-3's
 *   `<|end|>`, `<|user|>`, ...), special ones as control tokens.
 * - byte-level BPE (`tokenizer.json`, Llama 3 and Qwen2): model "gpt2", tokens by id (the
 *   vocabulary then the added tokens; special added tokens are control, others user defined),
 *   the merges as "left right" strings, and `tokenizer.ggml.pre` naming the pre-tokenizer regex
 *   of the family (llama.cpp picks its regex by that name).
 * - `tokenizer_config.json`'s `chat_template` becomes `tokenizer.chat_template`.
 *
 * The token list is padded with unused `[PAD<i>]` tokens to the model's vocab size (Qwen2.5's
 * embeddings have more rows than its tokenizer has tokens), as llama.cpp needs one token per row.
 */
import { join } from "node:path";
import { exists } from "../checkpoint/fs.ts";
import { findTokenizerFile } from "../checkpoint/hf_folder.ts";
import { TuneError } from "../errors.ts";
import { llama2cSpec, tryParseLlama2cTokenizer } from "../tokenizers/llama2c.ts";
import { detectTokenizerFormat } from "../tokenizers/load.ts";
import type { SpSpec } from "../tokenizers/sentencepiece.ts";
import { parseSentencePieceModel } from "../tokenizers/sentencepiece_model.ts";
import type { GgufValue } from "./gguf_file.ts";

/** GGUF token types. */
export const TokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 };

// deno-lint-ignore no-explicit-any
type Json = any;

function readJson(path: string): Json | undefined {
  if (!exists(path)) return undefined;
  try {
    return JSON.parse(Deno.readTextFileSync(path));
  } catch {
    throw new TuneError(`${path} is not valid JSON; fix or remove it`);
  }
}

/** The chat template of a tokenizer_config.json (a string, or the "default" of a named list). */
function chatTemplate(config: Json): string | undefined {
  const t = config?.chat_template;
  if (typeof t === "string") return t;
  if (Array.isArray(t)) {
    const d = t.find((x: Json) => x?.name === "default") ?? t[0];
    return typeof d?.template === "string" ? d.template : undefined;
  }
  return undefined;
}

function spMetadata(spec: SpSpec): Map<string, GgufValue> {
  const m = new Map<string, GgufValue>();
  m.set("tokenizer.ggml.model", { type: "string", value: "llama" });
  m.set("tokenizer.ggml.pre", { type: "string", value: "default" });
  m.set("tokenizer.ggml.tokens", {
    type: "array",
    of: "string",
    value: spec.pieces.map((p) => p.piece),
  });
  m.set("tokenizer.ggml.scores", {
    type: "array",
    of: "f32",
    value: spec.pieces.map((p) => p.score),
  });
  m.set("tokenizer.ggml.token_type", {
    type: "array",
    of: "i32",
    value: spec.pieces.map((p) => p.type),
  });
  if (spec.bosId >= 0) m.set("tokenizer.ggml.bos_token_id", { type: "u32", value: spec.bosId });
  if (spec.eosId >= 0) m.set("tokenizer.ggml.eos_token_id", { type: "u32", value: spec.eosId });
  if (spec.unkId >= 0) m.set("tokenizer.ggml.unknown_token_id", { type: "u32", value: spec.unkId });
  if (spec.padId >= 0) m.set("tokenizer.ggml.padding_token_id", { type: "u32", value: spec.padId });
  m.set("tokenizer.ggml.add_bos_token", { type: "bool", value: spec.bosId >= 0 });
  m.set("tokenizer.ggml.add_eos_token", { type: "bool", value: false });
  m.set("tokenizer.ggml.add_space_prefix", { type: "bool", value: spec.addDummyPrefix });
  return m;
}

function tokenContent(v: Json): string | undefined {
  if (typeof v === "string") return v;
  return typeof v?.content === "string" ? v.content : undefined;
}

function isByteLevel(json: Json): boolean {
  const s = JSON.stringify([json.pre_tokenizer ?? null, json.decoder ?? null]);
  return s.includes('"ByteLevel"');
}

function bpeMetadata(json: Json, config: Json, path: string, pre: string): Map<string, GgufValue> {
  const model = json.model ?? {};
  if (model.type !== "BPE" || !model.vocab) {
    throw new TuneError(
      `${path}: GGUF export reads BPE tokenizer.json files; this one is ${model.type}`,
    );
  }
  const tokens: string[] = [];
  const types: number[] = [];
  for (const [tok, id] of Object.entries(model.vocab as Record<string, number>)) {
    tokens[id] = tok;
    types[id] = TokenType.NORMAL;
  }
  for (const a of (json.added_tokens ?? []) as Json[]) {
    tokens[a.id] = a.content;
    types[a.id] = a.special ? TokenType.CONTROL : TokenType.USER_DEFINED;
  }
  for (let i = 0; i < tokens.length; i++) {
    if (tokens[i] === undefined) {
      tokens[i] = `[PAD${i}]`;
      types[i] = TokenType.UNUSED;
    }
  }
  const merges = (model.merges ?? []).map((x: Json) => Array.isArray(x) ? x.join(" ") : String(x));
  const idOf = (v: Json) => {
    const c = tokenContent(v);
    const i = c === undefined ? -1 : tokens.indexOf(c);
    return i;
  };
  const m = new Map<string, GgufValue>();
  m.set("tokenizer.ggml.model", { type: "string", value: "gpt2" });
  m.set("tokenizer.ggml.pre", { type: "string", value: pre });
  m.set("tokenizer.ggml.tokens", { type: "array", of: "string", value: tokens });
  m.set("tokenizer.ggml.token_type", { type: "array", of: "i32", value: types });
  m.set("tokenizer.ggml.merges", { type: "array", of: "string", value: merges });
  const bos = idOf(config?.bos_token);
  const eos = idOf(config?.eos_token);
  const pad = idOf(config?.pad_token);
  if (bos >= 0) m.set("tokenizer.ggml.bos_token_id", { type: "u32", value: bos });
  if (eos >= 0) m.set("tokenizer.ggml.eos_token_id", { type: "u32", value: eos });
  if (pad >= 0) m.set("tokenizer.ggml.padding_token_id", { type: "u32", value: pad });
  // BOS is added when tokenizer_config.json says so, or (Llama 3) when the post-processor
  // template starts with it.
  const addBos = typeof config?.add_bos_token === "boolean"
    ? config.add_bos_token
    : bos >= 0 && JSON.stringify(json.post_processor ?? null).includes(`"${tokens[bos]}"`);
  m.set("tokenizer.ggml.add_bos_token", { type: "bool", value: addBos });
  m.set("tokenizer.ggml.add_eos_token", { type: "bool", value: config?.add_eos_token === true });
  return m;
}

/**
 * The `tokenizer.*` metadata of the tokenizer in `dir` for a model of `vocabSize` rows.
 * `bpePre` is the family's `tokenizer.ggml.pre` for byte-level BPE vocabularies.
 */
export function tokenizerMetadata(
  dir: string,
  vocabSize: number,
  bpePre: string,
  tokenizerPath?: string,
): Map<string, GgufValue> {
  const path = tokenizerPath ?? findTokenizerFile(dir);
  if (!path) {
    throw new TuneError(
      `${dir} holds no tokenizer (tokenizer.json, tokenizer.model or tokenizer.bin); ` +
        `copy the model's tokenizer files into it or pass --tokenizer PATH`,
    );
  }
  const bytes = Deno.readFileSync(path);
  const tdir = path.slice(0, path.lastIndexOf("/") + 1) || "./";
  const config = readJson(join(tdir, "tokenizer_config.json"));
  let m: Map<string, GgufValue>;
  switch (detectTokenizerFormat(bytes)) {
    case "sentencepiece":
      m = spMetadata(parseSentencePieceModel(bytes, path));
      addHfAddedTokens(m, config, readJson(join(tdir, "added_tokens.json")));
      break;
    case "llama2c":
      m = spMetadata(llama2cSpec(tryParseLlama2cTokenizer(bytes)!, path));
      break;
    case "tokenizer.json": {
      const json = JSON.parse(new TextDecoder().decode(bytes));
      if (!isByteLevel(json)) {
        const sp = join(tdir, "tokenizer.model");
        if (path !== sp && exists(sp)) return tokenizerMetadata(dir, vocabSize, bpePre, sp);
        throw new TuneError(
          `${path} is a SentencePiece-style tokenizer.json; GGUF export needs its tokenizer.model ` +
            `beside it (Llama 2, Mistral, Gemma and Phi-3 repositories ship one)`,
        );
      }
      m = bpeMetadata(json, config, path, bpePre);
      break;
    }
    case "tiktoken":
      throw new TuneError(
        `${path} is a tiktoken file; GGUF export reads the Hugging Face tokenizer.json of the ` +
          `model (Llama 3 repositories ship one): put it in the folder or pass --tokenizer`,
      );
    default:
      throw new TuneError(`${path} is not a tokenizer tune reads`);
  }
  padVocab(m, vocabSize, path);
  const tmpl = chatTemplate(config);
  if (tmpl) m.set("tokenizer.chat_template", { type: "string", value: tmpl });
  return m;
}

/** Hugging Face's added tokens past the SentencePiece pieces (ids beyond them only). */
function addHfAddedTokens(m: Map<string, GgufValue>, config: Json, addedJson: Json) {
  const tokens = (m.get("tokenizer.ggml.tokens") as { value: string[] }).value;
  const types = (m.get("tokenizer.ggml.token_type") as { value: number[] }).value;
  const scores = (m.get("tokenizer.ggml.scores") as { value: number[] }).value;
  const added = new Map<number, { content: string; special: boolean }>();
  for (const [content, id] of Object.entries(addedJson ?? {})) {
    added.set(Number(id), { content, special: true });
  }
  for (const [id, t] of Object.entries(config?.added_tokens_decoder ?? {})) {
    const c = tokenContent(t);
    if (c !== undefined) {
      added.set(Number(id), { content: c, special: (t as Json).special !== false });
    }
  }
  const n0 = tokens.length;
  const top = Math.max(n0 - 1, ...added.keys());
  for (let id = n0; id <= top; id++) {
    const a = added.get(id);
    tokens.push(a?.content ?? `[PAD${id}]`);
    types.push(a ? (a.special ? TokenType.CONTROL : TokenType.USER_DEFINED) : TokenType.UNUSED);
    scores.push(0);
  }
}

function padVocab(m: Map<string, GgufValue>, vocabSize: number, path: string) {
  const tokens = (m.get("tokenizer.ggml.tokens") as { value: string[] }).value;
  const types = (m.get("tokenizer.ggml.token_type") as { value: number[] }).value;
  const scores = (m.get("tokenizer.ggml.scores") as { value: number[] } | undefined)?.value;
  if (tokens.length > vocabSize) {
    throw new TuneError(
      `tokenizer ${path} has ${tokens.length} tokens but the model's vocab_size is ${vocabSize}; ` +
        `use the tokenizer that came with the checkpoint`,
    );
  }
  for (let i = tokens.length; i < vocabSize; i++) {
    tokens.push(`[PAD${i}]`);
    types.push(TokenType.UNUSED);
    scores?.push(0);
  }
}
