/**
 * Phi-4's tokenizer (torchtune.models.phi4.Phi4Tokenizer): a GPT-2-style byte-level BPE read
 * from vocab.json + merges.txt (or the vocab and merges of a tokenizer.json), with Phi-4's
 * special tokens at 100256-100351 (or those of a special_tokens_path file). As torchtune's
 * GPT2BaseTokenizer under it:
 * - pre-tokenization is GPT-2's regex as Python's `re` reads it (`\w` = letters, numbers and
 *   `_`; `\d` = decimal digits; `\s` = str.isspace), not the cl100k pattern of Phi-4's
 *   tokenizer.json, so ids equal torchtune's;
 * - special-token text in the input is plain text unless `parseSpecial`;
 * - BOS is <|endoftext|>, EOS (and the only stop token) <|im_end|>, padding <|dummy_85|>;
 * - decoding drops the special ids (100256-100351 and any from special_tokens_path).
 * One difference: a merges.txt without a `#version` header keeps its first merge (torchtune
 * drops the first line whatever it holds).
 */
import { TuneError } from "../errors.ts";
import { SpecialSplitter } from "./_special.ts";
import { HfBpeTokenizer } from "./hf_tokenizer.ts";
import type { DecodeOptions, EncodeOptions, Tokenizer } from "./types.ts";

/** torchtune's PHI4_SPECIAL_TOKENS: eleven named tokens and <|dummy_4|>..<|dummy_87|>. */
export const PHI4_SPECIAL_TOKENS: Readonly<Record<string, number>> = (() => {
  const st: Record<string, number> = {
    "<|dummy_0|>": 100256,
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|dummy_1|>": 100261,
    "<|dummy_2|>": 100262,
    "<|dummy_3|>": 100263,
    "<|im_start|>": 100264,
    "<|im_end|>": 100265,
    "<|im_sep|>": 100266,
    "<|endofprompt|>": 100276,
  };
  let k = 4;
  for (let id = 100267; id < 100352; id++) {
    if (id !== 100276) st[`<|dummy_${k++}|>`] = id;
  }
  return st;
})();

// Ids torchtune's decode always drops.
const FIRST_SPECIAL = 100256;
const LAST_SPECIAL = 100351;

// Python's `\s` (str.isspace): White_Space plus the separators U+001C-U+001F.
const SP = String.raw`[\s\x1c-\x1f]`;
const NSP = String.raw`[^\s\x1c-\x1f]`;
/**
 * torchtune's GPT2BaseTokenizer pattern
 * `'s|'t|'re|'ve|'m|'ll|'d| ?[\w]+| ?\d+| ?[^\s\w\d]+|\s+(?!\S)|\s+` in Python `re` terms.
 */
export const PHI4_PATTERN = String.raw`'s|'t|'re|'ve|'m|'ll|'d| ?[\p{L}\p{N}_]+| ?\p{Nd}+| ?` +
  String.raw`[^\s\x1c-\x1f\p{L}\p{N}_]+|${SP}+(?!${NSP})|${SP}+`;

/** The merges of a merges.txt: one "left right" pair a line after the `#version` header. */
export function parseMergesTxt(text: string): string[] {
  return text.split("\n").map((l) => l.replace(/\r$/, "")).filter((l, i) =>
    l.trim() !== "" && !(i === 0 && l.startsWith("#version"))
  ).map((l) => l.trim().split(/\s+/).join(" "));
}

/** The tokenizer.json document of a GPT-2 byte-level BPE with torchtune's Phi-4 pre-tokenizer. */
export function phi4TokenizerJson(vocab: Record<string, number>, merges: string[]): unknown {
  return {
    model: { type: "BPE", vocab, merges, ignore_merges: false },
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: PHI4_PATTERN }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, use_regex: false },
      ],
    },
    decoder: { type: "ByteLevel" },
    added_tokens: [],
  };
}

/** Phi-4's tokenizer; see the module doc. */
export class Phi4Tokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly stopIds: readonly number[];
  readonly specialTokens: ReadonlyMap<string, number>;
  /** Truncation length from the tokenizer component (set by the builder). */
  maxSeqLen: number | null = null;
  readonly #bpe: HfBpeTokenizer;
  readonly #names: ReadonlyMap<number, string>;
  readonly #splitter: SpecialSplitter;

  /** `bpe`: the byte-level BPE with no added tokens; `special`: the special tokens by name. */
  constructor(
    bpe: HfBpeTokenizer,
    special: ReadonlyMap<string, number> = new Map(Object.entries(PHI4_SPECIAL_TOKENS)),
    source = "tokenizer",
  ) {
    const need = (name: string) => {
      const id = special.get(name);
      if (id === undefined) {
        throw new TuneError(
          `Phi-4 special tokens of ${source} have no ${name}; pass Phi-4's tokenizer.json as special_tokens_path or leave it unset`,
        );
      }
      return id;
    };
    this.#bpe = bpe;
    this.eosId = need("<|im_end|>");
    this.bosId = need("<|endoftext|>");
    this.padId = need("<|dummy_85|>");
    need("<|im_start|>");
    need("<|im_sep|>");
    this.stopIds = [this.eosId];
    this.specialTokens = special;
    this.#names = new Map([...special].map(([s, id]) => [id, s]));
    this.#splitter = new SpecialSplitter(special);
    this.vocabSize = Math.max(bpe.vocabSize, ...[...special.values()].map((id) => id + 1));
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const ids: number[] = (options.bos ?? true) ? [this.bosId] : [];
    const plain = (t: string) => ids.push(...this.#bpe.encode(t, { bos: false, eos: false }));
    if (!options.parseSpecial) plain(text);
    else {
      for (const seg of this.#splitter.split(text)) {
        if ("id" in seg) ids.push(seg.id);
        else plain(seg.text);
      }
    }
    if (options.eos) ids.push(this.eosId);
    return ids;
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const skip = options.skipSpecial ?? true;
    let out = "";
    let run: number[] = [];
    const flush = () => {
      if (run.length > 0) out += this.#bpe.decode(run, { skipSpecial: false });
      run = [];
    };
    for (const id of ids) {
      const name = this.#names.get(id);
      if (name === undefined && (id < FIRST_SPECIAL || id > LAST_SPECIAL)) {
        run.push(id);
        continue;
      }
      if (skip) continue;
      flush();
      out += name ?? "";
    }
    flush();
    return out;
  }
}
