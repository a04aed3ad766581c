/**
 * A small deterministic byte-level Tokenizer for the data tests (exported), and its own test.
 * Ids: 0 pad, 1 BOS, 2 EOS, 3..258 the UTF-8 bytes 0..255, then the given special tokens.
 * `encode` never parses special tokens from text (like tiktoken's default); they are
 * reachable through `specialTokens`. With `dummyPrefix`, encode prepends a space to
 * non-empty text, like SentencePiece's add_dummy_prefix, to exercise that code path.
 */
import { deepStrictEqual, strictEqual } from "node:assert";
import type { DecodeOptions, EncodeOptions, Tokenizer } from "../src/tokenizers/types.ts";

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
  readonly bosId: number;
  readonly eosId: number;
  readonly padId = 0;
  readonly stopIds: readonly number[];
  readonly specialTokens: Map<string, number>;
  readonly #dummyPrefix: boolean;
  readonly #names: Map<number, string>;

  /**
   * `eos` names a special token to use as EOS (e.g. Qwen2.5's "<|im_end|>"); `noBos` gives
   * bosId -1 (no BOS, as Qwen).
   */
  constructor(
    options: { specials?: string[]; dummyPrefix?: boolean; eos?: string; noBos?: boolean } = {},
  ) {
    this.bosId = options.noBos ? -1 : 1;
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
    const ids: number[] = [];
    // With parseSpecial, special-token text becomes its id; otherwise it is plain bytes.
    const names = options.parseSpecial ? [...this.specialTokens.keys()] : [];
    let rest = t;
    while (rest.length > 0) {
      let at = rest.length;
      let hit = "";
      for (const n of names) {
        const k = rest.indexOf(n);
        if (k >= 0 && k < at) [at, hit] = [k, n];
      }
      for (const b of new TextEncoder().encode(rest.slice(0, at))) ids.push(b + 3);
      if (hit) ids.push(this.specialTokens.get(hit)!);
      rest = rest.slice(at + hit.length);
    }
    if ((options.bos ?? true) && this.bosId >= 0) ids.unshift(this.bosId);
    if (options.eos ?? false) ids.push(this.eosId);
    return ids;
  }

  /** Text of the byte ids; special ids are dropped unless `skipSpecial: false` (contract default). */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const skip = options.skipSpecial ?? true;
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
        if (!skip) out += this.#names.get(id) ?? `<${id}>`;
      }
    }
    flush();
    return out;
  }

  /** Every id as text, special ids by name (<s>, </s>, <|eot_id|>, ...): what tests compare. */
  render(ids: ArrayLike<number>): string {
    return this.decode(Array.from(ids), { skipSpecial: false });
  }
}

Deno.test("`ByteTokenizer` round-trips text and names its special ids", () => {
  const tok = new ByteTokenizer({ specials: LLAMA3_SPECIALS });
  const ids = tok.encode("héllo", { bos: true, eos: true });
  deepStrictEqual(ids, [1, 107, 198, 172, 111, 111, 114, 2]);
  strictEqual(tok.render(ids), "<s>héllo</s>");
  strictEqual(tok.decode(ids), "héllo");
  strictEqual(tok.render([259, 107]), "<|start_header_id|>h");
  deepStrictEqual(tok.encode("a<|eot_id|>", { bos: false }), [
    100,
    63,
    127,
    104,
    114,
    119,
    98,
    108,
    103,
    127,
    65,
  ]);
  deepStrictEqual(tok.encode("a<|eot_id|>b", { bos: false, parseSpecial: true }), [100, 261, 101]);
  deepStrictEqual(new ByteTokenizer({ dummyPrefix: true }).encode("a", { bos: false }), [35, 100]);
});
