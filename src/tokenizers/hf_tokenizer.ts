/**
 * Hugging Face `tokenizer.json` BPE tokenizers: byte-level (Llama 3, Qwen2) and
 * SentencePiece-style Metaspace/byte-fallback (Llama 2, Mistral) variants. The pipeline is
 * the `tokenizers` library's: split off added tokens, normalize, pre-tokenize, BPE each piece
 * by merge rank (lowest first, ties leftmost), and on the way back the decoder chain.
 */
import { TuneError } from "../errors.ts";
import { stopIdsOf, TokenizerBase } from "./_base.ts";
import { bpeMerge } from "./_bpe.ts";
import { QWEN2_PATTERN } from "./_regex.ts";
import { utf8Encode } from "./_utf8.ts";
import {
  buildDecoder,
  buildNormalizer,
  buildPreTokenizer,
  type Decoder,
  type Normalizer,
  type PreTokenizer,
} from "./hf_pipeline.ts";
import type { DecodeOptions, EncodeOptions } from "./types.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

/** Overrides of the special-token roles read from the file and tokenizer_config.json. */
export interface HfTokenizerOptions {
  bosToken?: string | null;
  eosToken?: string;
  padToken?: string;
  /** Tokens that also end generation; default: those of <|eot_id|>, <|eom_id|>, <|im_end|>, <|endoftext|>, <|end_of_text|> present. */
  stopTokens?: readonly string[];
}

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
  lstrip: boolean;
  rstrip: boolean;
}

const DEFAULT_STOPS = [
  "<|eot_id|>",
  "<|eom_id|>",
  "<|im_end|>",
  "<|endoftext|>",
  "<|end_of_text|>",
];
const UNK = "\u0000<unk>"; // placeholder symbol for an unknown character; never merges

/** The content of a tokenizer_config.json token entry (a string or an AddedToken object). */
function tokenContent(v: Json): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v.content === "string") return v.content;
  return undefined;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/** A BPE tokenizer described by a tokenizer.json document. */
export class HfBpeTokenizer extends TokenizerBase {
  private readonly vocab = new Map<string, number>();
  private readonly idToToken: string[] = [];
  private readonly mergeRank = new Map<string, number>();
  private readonly added = new Map<string, AddedToken>();
  private readonly addedById = new Map<number, AddedToken>();
  private readonly allAddedRe: RegExp | undefined;
  private readonly plainAddedRe: RegExp | undefined;
  private readonly normalizer: Normalizer;
  private readonly preTokenizer: PreTokenizer;
  private readonly decoder: Decoder;
  private readonly byteFallback: boolean;
  private readonly ignoreMerges: boolean;
  private readonly fuseUnk: boolean;
  private readonly unkId: number | undefined;
  private readonly cache = new Map<string, number[]>();

  /** `json` is the parsed tokenizer.json, `config` the parsed tokenizer_config.json beside it (if any). */
  constructor(json: Json, source: string, config?: Json, options: HfTokenizerOptions = {}) {
    super();
    const bad = (what: string) =>
      new TuneError(
        `tokenizer file ${source} is not a valid tokenizer.json (${what}); pass the tokenizer.json that came with the checkpoint`,
      );
    const model = json?.model;
    if (!model || typeof model !== "object") throw bad("no model section");
    const type = model.type ?? (model.merges ? "BPE" : undefined);
    if (type !== "BPE") {
      throw new TuneError(
        `tokenizer ${source} has a ${
          type ?? "unknown"
        } model; tune supports BPE tokenizer.json files only (Llama 2/3, Mistral, Qwen2)`,
      );
    }
    if (model.continuing_subword_prefix || model.end_of_word_suffix) {
      throw new TuneError(
        `tokenizer ${source} uses continuing_subword_prefix/end_of_word_suffix, which tune does not support; use a byte-level or Metaspace BPE tokenizer.json`,
      );
    }
    if (!model.vocab || typeof model.vocab !== "object") throw bad("model.vocab missing");
    let maxId = -1;
    for (const [tok, id] of Object.entries(model.vocab)) {
      if (typeof id !== "number" || !Number.isInteger(id) || id < 0) {
        throw bad(`vocab id of ${tok}`);
      }
      this.vocab.set(tok, id);
      this.idToToken[id] = tok;
      maxId = Math.max(maxId, id);
    }
    const merges: Json[] = model.merges ?? [];
    if (!Array.isArray(merges)) throw bad("model.merges is not a list");
    merges.forEach((m, rank) => {
      let pair: string[];
      if (typeof m === "string") pair = m.split(" ");
      else pair = m;
      if (!Array.isArray(pair) || pair.length !== 2) {
        throw bad(`merge ${rank} ${JSON.stringify(m)}`);
      }
      const key = `${pair[0].length}:${pair[0]}${pair[1]}`;
      if (!this.mergeRank.has(key)) this.mergeRank.set(key, rank);
    });
    this.byteFallback = model.byte_fallback ?? false;
    this.ignoreMerges = model.ignore_merges ?? false;
    this.fuseUnk = model.fuse_unk ?? false;
    this.unkId = model.unk_token != null ? this.vocab.get(model.unk_token) : undefined;

    const special = new Map<string, number>();
    for (const t of (json.added_tokens ?? []) as Json[]) {
      if (typeof t?.content !== "string" || typeof t?.id !== "number") {
        throw bad("added_tokens entry");
      }
      const a: AddedToken = {
        id: t.id,
        content: t.content,
        special: t.special ?? false,
        lstrip: t.lstrip ?? false,
        rstrip: t.rstrip ?? false,
      };
      this.added.set(a.content, a);
      this.addedById.set(a.id, a);
      if (a.special) special.set(a.content, a.id);
      maxId = Math.max(maxId, a.id);
    }
    const alternation = (list: AddedToken[]) =>
      list.length === 0 ? undefined : new RegExp(
        list.map((a) => a.content).filter((c) => c !== "").sort((a, b) => b.length - a.length)
          .map(escapeRe).join("|"),
        "gu",
      );
    this.allAddedRe = alternation([...this.added.values()]);
    this.plainAddedRe = alternation([...this.added.values()].filter((a) => !a.special));

    this.normalizer = buildNormalizer(json.normalizer, source);
    this.preTokenizer = buildPreTokenizer(json.pre_tokenizer, source);
    this.decoder = buildDecoder(json.decoder, source);

    // special-token roles: explicit options, then tokenizer_config.json, then the post-processor
    const idOf = (tok: string | undefined | null) =>
      tok == null ? undefined : this.added.get(tok)?.id ?? this.vocab.get(tok);
    const [before, after] = templateSpecials(json.post_processor);
    const bosName = options.bosToken !== undefined
      ? options.bosToken
      : tokenContent(config?.bos_token);
    const eosName = options.eosToken ?? tokenContent(config?.eos_token);
    const eosId = idOf(eosName) ?? after[0] ??
      idOf(["</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"].find((n) => this.added.has(n))) ??
      -1;
    const padName = options.padToken ?? tokenContent(config?.pad_token);
    this.setIds({
      vocabSize: maxId + 1,
      bosId: options.bosToken === null ? -1 : (idOf(bosName ?? undefined) ?? before[0] ?? -1),
      eosId,
      padId: idOf(padName) ?? (eosId >= 0 ? eosId : 0),
      stopIds: stopIdsOf(eosId, options.stopTokens ?? DEFAULT_STOPS, special),
      specialTokens: special,
    });
  }

  /** BPE ids of one pre-tokenized word. */
  private bpeWord(word: string): number[] {
    const cached = this.cache.get(word);
    if (cached) return cached;
    let ids: number[];
    const whole = this.ignoreMerges ? this.vocab.get(word) : undefined;
    if (whole !== undefined) {
      ids = [whole];
    } else {
      const symbols: string[] = [];
      for (const ch of word) {
        if (this.vocab.has(ch)) {
          symbols.push(ch);
          continue;
        }
        if (this.byteFallback) {
          const pieces = [...utf8Encode(ch)].map((b) =>
            `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`
          );
          if (pieces.every((p) => this.vocab.has(p))) {
            symbols.push(...pieces);
            continue;
          }
        }
        if (this.unkId === undefined) continue; // no unk token: the character is dropped, as `tokenizers` does
        if (this.fuseUnk && symbols[symbols.length - 1] === UNK) continue;
        symbols.push(UNK);
      }
      const merged = bpeMerge(symbols, (l, r) => this.mergeRank.get(`${l.length}:${l}${r}`));
      ids = merged.map((s) => (s === UNK ? this.unkId! : this.vocab.get(s)!));
      if (ids.some((id) => id === undefined)) {
        throw new TuneError(
          `tokenizer.json merges produce a token missing from its vocab (in ${
            JSON.stringify(word)
          }); the tokenizer file is inconsistent`,
        );
      }
    }
    // cache pre-tokenized words only: a whole text (no pre-tokenizer, as Llama 2's) would bloat it
    if (word.length <= 64) {
      if (this.cache.size > 100_000) this.cache.clear();
      this.cache.set(word, ids);
    }
    return ids;
  }

  private encodeText(text: string, atStart: boolean, out: number[]): void {
    const normalized = this.normalizer(text);
    for (const piece of this.preTokenizer([{ text: normalized, atStart }])) {
      for (const id of this.bpeWord(piece.text)) out.push(id);
    }
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const ids: number[] = [];
    if ((options.bos ?? true) && this.bosId >= 0) ids.push(this.bosId);
    const re = (options.parseSpecial ?? true) ? this.allAddedRe : this.plainAddedRe;
    let pos = 0; // start of the text not yet encoded
    if (re) {
      re.lastIndex = 0;
      for (let m = re.exec(text); m !== null; m = re.exec(text)) {
        const tok = this.added.get(m[0])!;
        let start = m.index;
        let end = start + m[0].length;
        if (tok.lstrip) { while (start > pos && /\s/u.test(text[start - 1])) start--; }
        if (tok.rstrip) { while (end < text.length && /\s/u.test(text[end])) end++; }
        if (start > pos) this.encodeText(text.slice(pos, start), pos === 0, ids);
        ids.push(tok.id);
        pos = end;
        re.lastIndex = end;
      }
    }
    if (pos < text.length) this.encodeText(text.slice(pos), pos === 0, ids);
    if (options.eos && this.eosId >= 0) ids.push(this.eosId);
    return ids;
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const skip = options.skipSpecial ?? true;
    const tokens: string[] = [];
    for (const id of ids) {
      const added = this.addedById.get(id);
      if (added) {
        if (!(added.special && skip)) tokens.push(added.content);
        continue;
      }
      const tok = this.idToToken[id];
      if (tok !== undefined) tokens.push(tok);
    }
    return this.decoder(tokens).join("");
  }
}

/** Ids a post-processor puts before and after a single sequence. */
function templateSpecials(pp: Json): [number[], number[]] {
  if (!pp) return [[], []];
  switch (pp.type) {
    case "Sequence":
      for (const p of pp.processors ?? []) {
        const r = templateSpecials(p);
        if (r[0].length > 0 || r[1].length > 0) return r;
      }
      return [[], []];
    case "TemplateProcessing": {
      const before: number[] = [];
      const after: number[] = [];
      let seenA = false;
      for (const item of pp.single ?? []) {
        if (item.Sequence) seenA = true;
        else if (item.SpecialToken) {
          const ids: number[] = pp.special_tokens?.[item.SpecialToken.id]?.ids ?? [];
          (seenA ? after : before).push(...ids);
        }
      }
      return [before, after];
    }
    case "RobertaProcessing":
    case "BertProcessing":
      return [
        [pp.cls?.[1]].filter((x) => typeof x === "number"),
        [pp.sep?.[1]].filter((x) => typeof x === "number"),
      ];
    default:
      return [[], []];
  }
}

/** Qwen2.5's special tokens (torchtune's QWEN2_5_SPECIAL_TOKENS). */
export const QWEN2_5_SPECIAL_TOKENS: Readonly<Record<string, number>> = {
  "<|endoftext|>": 151643,
  "<|im_start|>": 151644,
  "<|im_end|>": 151645,
  "<|object_ref_start|>": 151646,
  "<|object_ref_end|>": 151647,
  "<|box_start|>": 151648,
  "<|box_end|>": 151649,
  "<|quad_start|>": 151650,
  "<|quad_end|>": 151651,
  "<|vision_start|>": 151652,
  "<|vision_end|>": 151653,
  "<|vision_pad|>": 151654,
  "<|image_pad|>": 151655,
  "<|video_pad|>": 151656,
  "<tool_call>": 151657,
  "</tool_call>": 151658,
  "<|fim_prefix|>": 151659,
  "<|fim_middle|>": 151660,
  "<|fim_suffix|>": 151661,
  "<|fim_pad|>": 151662,
  "<|repo_name|>": 151663,
  "<|file_sep|>": 151664,
};

/** Qwen3's special tokens (torchtune's QWEN3_SPECIAL_TOKENS): Qwen2.5's plus four. */
export const QWEN3_SPECIAL_TOKENS: Readonly<Record<string, number>> = {
  ...QWEN2_5_SPECIAL_TOKENS,
  "<tool_response>": 151665,
  "</tool_response>": 151666,
  "<think>": 151667,
  "</think>": 151668,
};

/**
 * The tokenizer.json equivalent of a Qwen2 `vocab.json` + `merges.txt` pair (as torchtune's
 * Qwen2Tokenizer reads them): NFC, Qwen2's regex, byte-level BPE, the given special tokens.
 */
export function qwen2TokenizerJson(
  vocab: Record<string, number>,
  mergesTxt: string,
  specialTokens: Readonly<Record<string, number>>,
): Json {
  const merges = mergesTxt.split("\n").filter((l, i) =>
    l !== "" && !(i === 0 && l.startsWith("#version"))
  );
  const added = Object.entries(specialTokens).map(([content, id]) => ({
    id,
    content,
    special: true,
  }));
  return byteLevelBpeJson(vocab, merges, QWEN2_PATTERN, { type: "NFC" }, added);
}

/**
 * The tokenizer.json document of a byte-level BPE (GPT-2 style) from its vocab and merges:
 * the `pattern` split then byte-level pre-tokenization, `normalizer` (null: none), a byte-level
 * decoder and `addedTokens`.
 */
export function byteLevelBpeJson(
  vocab: Record<string, number>,
  merges: string[],
  pattern: string,
  normalizer: Json,
  addedTokens: Json[],
): Json {
  return {
    model: { type: "BPE", vocab, merges, ignore_merges: false },
    normalizer,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: pattern }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, use_regex: false },
      ],
    },
    decoder: { type: "ByteLevel" },
    added_tokens: addedTokens,
  };
}
