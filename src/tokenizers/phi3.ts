/**
 * Phi-3 Mini's tokenizer (torchtune.models.phi3.Phi3MiniTokenizer): Llama 2's SentencePiece
 * tokenizer.model plus Phi-3's chat tokens, which the .model file does not hold. As in
 * torchtune: EOS and padding are <|endoftext|> (32000); `encode(text, {eos: true})` appends
 * SentencePiece's own </s> (torchtune's encode passes add_eos to the SentencePiece model);
 * special-token text in the input is plain text unless `parseSpecial`; decoding drops ids
 * 32000-32064 (the chat tokens and the embedding's padding rows). Generation stops on
 * <|endoftext|>, and also on <|assistant|> and <|end|> as Phi-3's generation_config.json does
 * (torchtune stops on <|endoftext|> only, so an instruct model would run past its <|end|>).
 */
import { TokenizerBase } from "./_base.ts";
import { AddedTokens } from "./_special.ts";
import type { SentencePieceTokenizer } from "./sentencepiece.ts";
import type { DecodeOptions, EncodeOptions } from "./types.ts";

/** torchtune's PHI3_SPECIAL_TOKENS. */
export const PHI3_SPECIAL_TOKENS: Readonly<Record<string, number>> = {
  "<|endoftext|>": 32000,
  "<|assistant|>": 32001,
  "<|placeholder1|>": 32002,
  "<|placeholder2|>": 32003,
  "<|placeholder3|>": 32004,
  "<|placeholder4|>": 32005,
  "<|system|>": 32006,
  "<|end|>": 32007,
  "<|placeholder5|>": 32008,
  "<|placeholder6|>": 32009,
  "<|user|>": 32010,
};

// Ids torchtune's decode skips: the chat tokens and the rest of the 32064-row embedding.
const FIRST_ADDED = 32000;
const LAST_ADDED = 32064;

/** A SentencePiece model with Phi-3's chat tokens; see the module doc. */
export class Phi3MiniTokenizer extends TokenizerBase {
  readonly #sp: SentencePieceTokenizer;
  readonly #added: AddedTokens;

  /** `added`: the chat tokens (default torchtune's); must hold <|endoftext|>. */
  constructor(
    sp: SentencePieceTokenizer,
    added: ReadonlyMap<string, number> = new Map(Object.entries(PHI3_SPECIAL_TOKENS)),
  ) {
    super();
    const eos = added.get("<|endoftext|>");
    if (eos === undefined) throw new Error("Phi-3 special tokens need <|endoftext|>");
    this.#sp = sp;
    this.#added = new AddedTokens(added, FIRST_ADDED, LAST_ADDED);
    const stops = ["<|endoftext|>", "<|assistant|>", "<|end|>"].map((s) => added.get(s));
    this.setIds({
      vocabSize: Math.max(sp.vocabSize, ...[...added.values()].map((id) => id + 1)),
      bosId: sp.bosId,
      eosId: eos,
      padId: eos,
      stopIds: stops.filter((id): id is number => id !== undefined),
      specialTokens: new Map([...sp.specialTokens, ...added]),
    });
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const bos = options.bos ?? true;
    const eos = options.eos ?? false;
    if (!options.parseSpecial) return this.#sp.encode(text, { bos, eos });
    const ids: number[] = bos && this.bosId >= 0 ? [this.bosId] : [];
    ids.push(...this.#added.encode(text, (t) => this.#sp.encode(t, { bos: false, eos: false })));
    if (eos && this.#sp.eosId >= 0) ids.push(this.#sp.eosId);
    return ids;
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    return this.#added.decode(
      ids,
      options.skipSpecial ?? true,
      (run) => this.#sp.decode(run, options),
    );
  }
}
