/**
 * `_component_` builders of src/tokenizers, registered with src/config/registry.ts under
 * torchtune's names, plus the generic `tune.tokenizers.load`. Each loads the file named by
 * `path` (format detected from its contents) with the family's special tokens.
 * Imported (for its side effect) by src/components.ts.
 */
import { registerComponent } from "../config/registry.ts";
import type { ParamSchema, ParamSpec } from "../config/schema.ts";
import { TuneError } from "../errors.ts";
import {
  HfBpeTokenizer,
  QWEN2_5_SPECIAL_TOKENS,
  qwen2TokenizerJson,
  QWEN3_SPECIAL_TOKENS,
} from "./hf_tokenizer.ts";
import {
  detectTokenizerFormat,
  loadTokenizer,
  type LoadTokenizerOptions,
  readTokenizerFile,
  tokenizerFromBytes,
} from "./load.ts";
import { GemmaTokenizer } from "./gemma.ts";
import { Phi3MiniTokenizer } from "./phi3.ts";
import { parseMergesTxt, Phi4Tokenizer, phi4TokenizerJson } from "./phi4.ts";
import { SentencePieceTokenizer } from "./sentencepiece.ts";
import { parsePromptTemplate } from "../data/prompt_template.ts";
import { chatTemplateFor } from "./chat_template.ts";
import type { ChatTemplate, PromptTemplate, Tokenizer } from "./types.ts";

const COMMON: ParamSchema = {
  path: {
    type: "string",
    default: null,
    doc: "tokenizer file (tokenizer.model, tokenizer.bin or tokenizer.json); null: the one in " +
      "checkpointer.checkpoint_dir",
  },
  max_seq_len: {
    type: "int",
    default: null,
    doc: "truncate tokenized samples to this many tokens (null: no limit)",
  },
  prompt_template: {
    type: "any",
    default: null,
    doc: "torchtune prompt template: a name (torchtune.data.SummarizeTemplate, " +
      "GrammarErrorCorrectionTemplate, QuestionAnswerTemplate, ChatMLTemplate, " +
      "torchtune.models.mistral.MistralChatTemplate, torchtune.models.llama2.Llama2ChatTemplate) " +
      "or {role: [prepend, append]}",
  },
  chat_template: {
    type: "string",
    default: null,
    doc: "hf: format chats with the checkpoint's own Jinja chat_template (tokenizer_config.json " +
      "beside the tokenizer file); or a path to a tokenizer_config.json / .jinja file; " +
      "null: torchtune's format for the family",
  },
};

/**
 * Apply the common keys to a loaded tokenizer. `autoFind`: the generic loader, which picks up
 * a chat template beside the file for chat_format auto when no built-in format fits.
 */
function finish(
  tok: Tokenizer & {
    maxSeqLen: number | null;
    promptTemplate?: PromptTemplate | null;
    chatTemplate?: ChatTemplate | null;
  },
  args: Record<string, unknown>,
  section: string,
  autoFind = false,
): Tokenizer {
  tok.promptTemplate = parsePromptTemplate(args.prompt_template, `${section}.prompt_template`);
  tok.chatTemplate = chatTemplateFor(args.chat_template, pathOf(args), autoFind);
  const n = args.max_seq_len as number | null;
  if (n !== null && (!Number.isInteger(n) || n < 1)) {
    throw new TuneError(`tokenizer.max_seq_len must be a positive integer or null, got ${n}`);
  }
  tok.maxSeqLen = n;
  return tok;
}

/**
 * The tokenizer file. Recipes fill a null `path` from the checkpoint folder
 * (src/training/tokenizer.ts) before building; a builder reached without one says so.
 */
function pathOf(args: Record<string, unknown>): string {
  if (typeof args.path !== "string" || args.path === "") {
    throw new TuneError(
      "tokenizer.path is not set; set it to the model's tokenizer file (tokenizer.model, " +
        "tokenizer.json or tokenizer.bin)",
    );
  }
  return args.path;
}

function load(args: Record<string, unknown>, options: LoadTokenizerOptions = {}) {
  return loadTokenizer(pathOf(args), options) as Tokenizer & { maxSeqLen: number | null };
}

/** Special-token names in id order from a tokenizer.json's added_tokens (torchtune's special_tokens_path). */
function specialNamesFrom(path: string): string[] {
  let json: { added_tokens?: { id: number; content: string }[] };
  try {
    json = JSON.parse(new TextDecoder().decode(readTokenizerFile(path)));
  } catch (e) {
    if (e instanceof TuneError) throw e;
    throw new TuneError(
      `tokenizer.special_tokens_path ${path} is not valid JSON; pass the model's tokenizer.json`,
    );
  }
  const added = [...(json.added_tokens ?? [])].sort((a, b) => a.id - b.id);
  if (added.length === 0) {
    throw new TuneError(
      `tokenizer.special_tokens_path ${path} has no added_tokens; pass the model's tokenizer.json`,
    );
  }
  return added.map((t) => t.content);
}

/** Special tokens by name from a tokenizer.json's added_tokens (torchtune's parse_hf_tokenizer_json). */
function specialMapFrom(path: string): Map<string, number> {
  const names = specialNamesFrom(path);
  const json = JSON.parse(new TextDecoder().decode(readTokenizerFile(path)));
  const ids = new Map<string, number>();
  for (const t of json.added_tokens as { id: number; content: string }[]) ids.set(t.content, t.id);
  return new Map(names.map((n) => [n, ids.get(n)!]));
}

/** The `special_tokens_path` key of a family whose special tokens a tokenizer.json may replace. */
function specialTokensPathParam(replaces: string): ParamSpec {
  return {
    type: "string",
    default: null,
    doc: `tokenizer.json whose added_tokens replace ${replaces}`,
  };
}

/** The SentencePiece model at `tokenizer.path`, which `builder` needs (`model`, for the message). */
function sentencePieceOf(
  args: Record<string, unknown>,
  builder: string,
  model: string,
): SentencePieceTokenizer {
  const path = pathOf(args);
  const bytes = readTokenizerFile(path);
  const sp = detectTokenizerFormat(bytes) === "sentencepiece"
    ? tokenizerFromBytes(bytes, path)
    : null;
  if (!(sp instanceof SentencePieceTokenizer)) {
    throw new TuneError(
      `tokenizer.path ${path} is not a SentencePiece model; ${builder} needs ${model}`,
    );
  }
  return sp;
}

/**
 * The builders that take any tokenizer file with the format's own special tokens: Llama 2's and
 * Mistral's (SentencePiece tokenizer.model) and the generic `tune.tokenizers.load`, which also
 * picks up a chat template found beside the file.
 */
const LOADING_BUILDERS = [
  {
    name: "torchtune.models.llama2.llama2_tokenizer",
    alias: "tune.tokenizers.llama2",
    doc:
      "Llama 2 SentencePiece BPE tokenizer (tokenizer.model, llama2.c tokenizer.bin or tokenizer.json)",
    autoFind: false,
  },
  {
    name: "torchtune.models.mistral.mistral_tokenizer",
    alias: "tune.tokenizers.mistral",
    doc: "Mistral SentencePiece BPE tokenizer (tokenizer.model or tokenizer.json)",
    autoFind: false,
  },
  {
    name: "tune.tokenizers.load",
    alias: "tune.tokenizer",
    doc:
      "any tokenizer file tune reads: SentencePiece .model, llama2.c .bin, tiktoken, tokenizer.json",
    autoFind: true,
  },
];
for (const b of LOADING_BUILDERS) {
  registerComponent<Tokenizer>({
    name: b.name,
    aliases: [b.alias],
    kind: "tokenizer",
    doc: b.doc,
    params: COMMON,
    build: (args) => finish(load(args), args, "tokenizer", b.autoFind),
  });
}

/** torchtune.models.llama3.llama3_tokenizer: tiktoken tokenizer.model with Llama 3's special tokens. */
export const llama3TokenizerComponent = registerComponent<Tokenizer>({
  name: "torchtune.models.llama3.llama3_tokenizer",
  aliases: ["tune.tokenizers.llama3"],
  kind: "tokenizer",
  doc: "Llama 3 tiktoken tokenizer (original/tokenizer.model, or the HF tokenizer.json)",
  params: {
    ...COMMON,
    special_tokens_path: specialTokensPathParam("Llama 3's 256 special tokens (in id order)"),
  },
  build(args) {
    const sp = args.special_tokens_path as string | null;
    const options: LoadTokenizerOptions = sp
      ? { tiktoken: { specialTokens: specialMapFrom(sp) } }
      : {};
    return finish(load(args, options), args, "tokenizer");
  },
});

/** torchtune.models.phi3.phi3_mini_tokenizer: SentencePiece tokenizer.model plus Phi-3's chat tokens. */
export const phi3MiniTokenizerComponent = registerComponent<Tokenizer>({
  name: "torchtune.models.phi3.phi3_mini_tokenizer",
  aliases: ["tune.tokenizers.phi3_mini"],
  kind: "tokenizer",
  doc:
    "Phi-3 Mini: SentencePiece tokenizer.model with <|user|>, <|assistant|>, <|system|>, <|end|> (32000-32010); EOS <|endoftext|>",
  params: {
    ...COMMON,
    path: {
      type: "string",
      default: null,
      doc: "Phi-3's SentencePiece tokenizer.model (null: the one in checkpointer.checkpoint_dir)",
    },
    special_tokens_path: specialTokensPathParam("Phi-3's chat tokens (default torchtune's)"),
  },
  build(args) {
    const sp = sentencePieceOf(args, "phi3_mini_tokenizer", "Phi-3's tokenizer.model");
    const st = args.special_tokens_path as string | null;
    const added = st ? specialMapFrom(st) : undefined;
    if (added && !added.has("<|endoftext|>")) {
      throw new TuneError(
        `tokenizer.special_tokens_path ${st} has no <|endoftext|>; pass Phi-3's tokenizer.json`,
      );
    }
    return finish(new Phi3MiniTokenizer(sp, added), args, "tokenizer");
  },
});

/** torchtune.models.gemma.gemma_tokenizer: Gemma's SentencePiece tokenizer.model, pad id 0. */
export const gemmaTokenizerComponent = registerComponent<Tokenizer>({
  name: "torchtune.models.gemma.gemma_tokenizer",
  aliases: ["tune.tokenizers.gemma"],
  kind: "tokenizer",
  doc: "Gemma: SentencePiece tokenizer.model (BOS <bos>, EOS <eos> from the model; pad id 0)",
  params: {
    ...COMMON,
    path: {
      type: "string",
      default: null,
      doc: "Gemma's SentencePiece tokenizer.model (null: the one in checkpointer.checkpoint_dir)",
    },
  },
  build(args) {
    const sp = sentencePieceOf(args, "gemma_tokenizer", "Gemma's tokenizer.model");
    return finish(new GemmaTokenizer(sp), args, "tokenizer");
  },
});

function buildQwen(
  args: Record<string, unknown>,
  eosToken: string,
  specials: Readonly<Record<string, number>>,
) {
  const path = pathOf(args);
  const merges = args.merges_file as string | null;
  const roles = { bosToken: null, eosToken, padToken: "<|endoftext|>" };
  let tok: HfBpeTokenizer;
  if (merges !== null || path.endsWith("vocab.json")) {
    if (merges === null) {
      throw new TuneError(
        `tokenizer.path ${path} is a vocab.json; also set tokenizer.merges_file to its merges.txt (or point path at tokenizer.json)`,
      );
    }
    const dec = new TextDecoder();
    let vocab: Record<string, number>;
    try {
      vocab = JSON.parse(dec.decode(readTokenizerFile(path)));
    } catch (e) {
      if (e instanceof TuneError) throw e;
      throw new TuneError(
        `tokenizer file ${path} is not a valid vocab.json; pass Qwen's vocab.json`,
      );
    }
    const json = qwen2TokenizerJson(vocab, dec.decode(readTokenizerFile(merges)), specials);
    tok = new HfBpeTokenizer(json, path, undefined, roles);
  } else {
    const loaded = loadTokenizer(path, { hf: roles });
    if (!(loaded instanceof HfBpeTokenizer)) {
      throw new TuneError(
        `tokenizer.path ${path} is not a tokenizer.json; Qwen tokenizers need tokenizer.json, or vocab.json with merges_file`,
      );
    }
    tok = loaded;
  }
  return finish(tok, args, "tokenizer");
}

const QWEN_PARAMS: ParamSchema = {
  ...COMMON,
  path: {
    type: "string",
    default: null,
    doc: "tokenizer.json, or vocab.json together with merges_file (null: the tokenizer.json in " +
      "checkpointer.checkpoint_dir)",
  },
  merges_file: { type: "string", default: null, doc: "merges.txt beside vocab.json" },
};

/**
 * The Qwen builders: byte-level BPE with each family's special tokens. EOS is <|im_end|> for
 * all three (torchtune's Qwen2Tokenizer default too), so a trained turn ends as at inference.
 */
const QWEN_BUILDERS = [
  { family: "qwen2_5", specials: QWEN2_5_SPECIAL_TOKENS, doc: "Qwen2.5" },
  {
    family: "qwen2",
    specials: { "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645 },
    doc: "Qwen2",
  },
  // Qwen2.5's tokens plus <tool_response> and <think>
  { family: "qwen3", specials: QWEN3_SPECIAL_TOKENS, doc: "Qwen3" },
];
for (const q of QWEN_BUILDERS) {
  registerComponent<Tokenizer>({
    name: `torchtune.models.${q.family}.${q.family}_tokenizer`,
    aliases: [`tune.tokenizers.${q.family}`],
    kind: "tokenizer",
    doc:
      `${q.doc} byte-level BPE tokenizer (tokenizer.json, or vocab.json + merges.txt); EOS <|im_end|>`,
    params: QWEN_PARAMS,
    build: (args) => buildQwen(args, "<|im_end|>", q.specials),
  });
}

// deno-lint-ignore no-explicit-any
type Json = any;

/** A JSON file's parsed content, or a one-line error naming what it should be. */
function readJson(path: string, what: string): Json {
  try {
    return JSON.parse(new TextDecoder().decode(readTokenizerFile(path)));
  } catch (e) {
    if (e instanceof TuneError) throw e;
    throw new TuneError(`tokenizer file ${path} is not valid JSON; pass ${what}`);
  }
}

/**
 * torchtune.models.phi4.phi4_tokenizer: GPT-2 byte-level BPE from vocab.json + merges.txt
 * (torchtune's keys), or the vocab and merges of a tokenizer.json given as `path` (also what a
 * recipe finds in the checkpoint folder when no vocab_path is set); src/tokenizers/phi4.ts.
 */
export const phi4TokenizerComponent = registerComponent<Tokenizer>({
  name: "torchtune.models.phi4.phi4_tokenizer",
  aliases: ["tune.tokenizers.phi4"],
  kind: "tokenizer",
  doc:
    "Phi-4 byte-level BPE (vocab.json + merges.txt, or tokenizer.json); BOS <|endoftext|>, EOS <|im_end|>",
  params: {
    ...COMMON,
    path: {
      type: "string",
      default: null,
      doc: "a tokenizer.json to take the vocab and merges from instead of vocab_path/merges_path " +
        "(null: vocab_path, else the tokenizer.json in checkpointer.checkpoint_dir)",
    },
    vocab_path: { type: "string", default: null, doc: "Phi-4's vocab.json" },
    merges_path: { type: "string", default: null, doc: "Phi-4's merges.txt" },
    special_tokens_path: specialTokensPathParam("Phi-4's special tokens (default torchtune's)"),
    truncation_type: {
      type: "string",
      default: "right",
      doc: "right: keep the first max_seq_len tokens (left is refused)",
    },
  },
  build(args) {
    if ((args.truncation_type ?? "right") !== "right") {
      throw new TuneError(
        `tokenizer.truncation_type ${args.truncation_type} is not supported; tune truncates on the right (set truncation_type: right)`,
      );
    }
    const vocabPath = (args.vocab_path ?? null) as string | null;
    const mergesPath = (args.merges_path ?? null) as string | null;
    let vocab: Record<string, number>;
    let merges: string[];
    let source: string;
    if (vocabPath !== null) {
      if (mergesPath === null) {
        throw new TuneError(
          `tokenizer.vocab_path is set but merges_path is not; set tokenizer.merges_path to the merges.txt beside ${vocabPath}`,
        );
      }
      vocab = readJson(vocabPath, "Phi-4's vocab.json");
      merges = parseMergesTxt(new TextDecoder().decode(readTokenizerFile(mergesPath)));
      source = vocabPath;
    } else {
      source = pathOf(args);
      const json = readJson(source, "Phi-4's tokenizer.json, or set vocab_path and merges_path");
      if (!json?.model?.vocab || !Array.isArray(json.model.merges)) {
        throw new TuneError(
          `tokenizer.path ${source} has no BPE model.vocab/model.merges; pass Phi-4's tokenizer.json, or set vocab_path and merges_path`,
        );
      }
      vocab = json.model.vocab;
      merges = json.model.merges.map((m: string | string[]) => Array.isArray(m) ? m.join(" ") : m);
    }
    const bpe = new HfBpeTokenizer(phi4TokenizerJson(vocab, merges), source, undefined, {
      bosToken: null,
    });
    const st = (args.special_tokens_path ?? null) as string | null;
    const tok = new Phi4Tokenizer(bpe, st ? specialMapFrom(st) : undefined, st ?? source);
    return finish(tok, { ...args, path: source }, "tokenizer");
  },
});
