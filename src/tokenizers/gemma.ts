/**
 * Gemma's tokenizer (torchtune.models.gemma.GemmaTokenizer): Gemma's SentencePiece
 * tokenizer.model (256000 pieces) with BOS and EOS from the model (<bos> 2, <eos> 1 in the
 * published file), padding forced to id 0 as torchtune does ("Original tokenizer has no
 * pad_id"), and generation stopping on EOS only. Messages are tokenized without chat tokens
 * (torchtune's tokenize_messages_no_special_tokens), which the data pipeline's fallback chat
 * format does: torchtune has no Gemma chat template; the instruct models' `<start_of_turn>`
 * format can be written through `prompt_template` tags.
 */
import type { SentencePieceTokenizer } from "./sentencepiece.ts";
import { TokenizerBase } from "./_base.ts";
import type { DecodeOptions, EncodeOptions, PromptTemplate } from "./types.ts";

/** A SentencePiece model with torchtune's GemmaTokenizer ids; see the module doc. */
export class GemmaTokenizer extends TokenizerBase {
  /** torchtune's prompt_template (set by the builder). */
  promptTemplate: PromptTemplate | null = null;
  readonly #sp: SentencePieceTokenizer;

  constructor(sp: SentencePieceTokenizer) {
    super();
    this.#sp = sp;
    this.setIds({
      vocabSize: sp.vocabSize,
      bosId: sp.bosId,
      eosId: sp.eosId,
      padId: 0, // always 0, as torchtune's GemmaTokenizer sets it
      stopIds: sp.eosId >= 0 ? [sp.eosId] : [],
      specialTokens: sp.specialTokens,
    });
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    return this.#sp.encode(text, options);
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    return this.#sp.decode(ids, options);
  }
}
