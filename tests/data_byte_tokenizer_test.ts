/**
 * A small deterministic byte-level Tokenizer for the data tests (exported), and its own test.
 * Ids: 0 pad, 1 BOS, 2 EOS, 3..258 the UTF-8 bytes 0..255, then the given special tokens.
 * `encode` never parses special tokens from text (like tiktoken's default); they are
 * reachable through `specialTokens`. With `dummyPrefix`, encode prepends a space to
 * non-empty text, like SentencePiece's add_dummy_prefix, to exercise that code path.
 */
import { deepStrictEqual, strictEqual } from "node:assert";
import type { EncodeOptions, Tokenizer } from "../src/tokenizers/types.ts";

/** Llama 3's special tokens (the ones the data pipeline uses). */
export const LLAMA3_SPECIALS = [
  "<|start_header_id|>",
  "<|end_header_id|>",
  "<|eot_id|>",
  "<|eom_id|>",
  "<|python_tag|>",
];

/** Qwen's ChatML special tokens. */
export const CHATML_SPECIALS = ["<|im_start|>", "<|im_end|>"];

/** Byte-level tokenizer; see the module doc. */
export class ByteTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId = 1;
  readonly eosId: number;
  readonly padId = 0;
  readonly stopIds: readonly number[];
  readonly specialTokens: Map<string, number>;
  readonly #dummyPrefix: boolean;
  readonly #names: Map<number, string>;

  /** `eos` names a special token to use as EOS (e.g. Qwen2.5's "<|im_end|>"). */
  constructor(options: { specials?: string[]; dummyPrefix?: boolean; eos?: string } = {}) {
    const specials = options.specials ?? [];
    this.specialTokens = new Map(specials.map((s, i) => [s, 259 + i]));
    this.#names = new Map([[0, "<pad>"], [1, "<s>"], [2, "</s>"]]);
    for (const [s, id] of this.specialTokens) this.#names.set(id, s);
    this.vocabSize = 259 + specials.length;
    this.eosId = options.eos ? this.specialTokens.get(options.eos)! : 2;
    this.stopIds = [this.eosId];
    this.#dummyPrefix = options.dummyPrefix ?? false;
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const t = this.#dummyPrefix && text.length > 0 ? " " + text : text;
    const ids = Array.from(new TextEncoder().encode(t), (b) => b + 3);
    if (options.bos ?? true) ids.unshift(this.bosId);
    if (options.eos ?? false) ids.push(this.eosId);
    return ids;
  }

  decode(ids: readonly number[]): string {
    let out = "";
    let bytes: number[] = [];
    const flush = () => {
      out += new TextDecoder().decode(new Uint8Array(bytes));
      bytes = [];
    };
    for (const id of ids) {
      if (id >= 3 && id < 259) bytes.push(id - 3);
      else {
        flush();
        out += this.#names.get(id) ?? `<${id}>`;
      }
    }
    flush();
    return out;
  }
}

Deno.test("`ByteTokenizer` round-trips text and names its special ids", () => {
  const tok = new ByteTokenizer({ specials: LLAMA3_SPECIALS });
  const ids = tok.encode("héllo", { bos: true, eos: true });
  deepStrictEqual(ids, [1, 107, 198, 172, 111, 111, 114, 2]);
  strictEqual(tok.decode(ids), "<s>héllo</s>");
  strictEqual(tok.decode([259, 107]), "<|start_header_id|>h");
  deepStrictEqual(new ByteTokenizer({ dummyPrefix: true }).encode("a", { bos: false }), [35, 100]);
});
