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
import { TokenizerBase } from "./_base.ts";
import { AddedTokens } from "./_special.ts";
import { byteLevelBpeJson, HfBpeTokenizer } from "./hf_tokenizer.ts";
import type { DecodeOptions, EncodeOptions } from "./types.ts";

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
  return byteLevelBpeJson(vocab, merges, PHI4_PATTERN, null, []);
}

/** Phi-4's tokenizer; see the module doc. */
export class Phi4Tokenizer extends TokenizerBase {
  readonly #bpe: HfBpeTokenizer;
  readonly #added: AddedTokens;

  /** `bpe`: the byte-level BPE with no added tokens; `special`: the special tokens by name. */
  constructor(
    bpe: HfBpeTokenizer,
    special: ReadonlyMap<string, number> = new Map(Object.entries(PHI4_SPECIAL_TOKENS)),
    source = "tokenizer",
  ) {
    super();
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
    const eosId = need("<|im_end|>");
    const bosId = need("<|endoftext|>");
    const padId = need("<|dummy_85|>");
    need("<|im_start|>");
    need("<|im_sep|>");
    this.#added = new AddedTokens(special, FIRST_SPECIAL, LAST_SPECIAL);
    this.setIds({
      vocabSize: Math.max(bpe.vocabSize, ...[...special.values()].map((id) => id + 1)),
      bosId,
      eosId,
      padId,
      stopIds: [eosId],
      specialTokens: special,
    });
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const ids: number[] = (options.bos ?? true) ? [this.bosId] : [];
    const plain = (t: string) => this.#bpe.encode(t, { bos: false, eos: false });
    ids.push(...(options.parseSpecial ? this.#added.encode(text, plain) : plain(text)));
    if (options.eos) ids.push(this.eosId);
    return ids;
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const plain = (run: number[]) => this.#bpe.decode(run, { skipSpecial: false });
    return this.#added.decode(ids, options.skipSpecial ?? true, plain);
  }
}
