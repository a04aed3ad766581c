/**
 * Phi-4's tokenizer (torchtune.models.phi4.phi4_tokenizer) and chat format (torchtune's
 * Phi4Tokenizer.tokenize_messages). The expected ids come from
 * tests/reference/phi4_tokenizer_reference.py, which restates torchtune's GPT2BaseTokenizer
 * (Python `re` pre-tokenization, GPT-2 bpe()) and Phi4Tokenizer.tokenize_messages step by step
 * (see its doc) on the small vocab.json + merges.txt it writes to tests/data/tokenizers/phi4_tiny/.
 */
import { deepStrictEqual as assertEquals, strictEqual, throws } from "node:assert";
import "../src/tokenizers/components.ts";
import { findComponent } from "../src/config/registry.ts";
import { resolveChatFormat, tokenizeMessages } from "../src/data/chat_format.ts";
import type { Message, Role } from "../src/data/types.ts";
import { TuneError } from "../src/errors.ts";
import { PHI4_SPECIAL_TOKENS } from "../src/tokenizers/phi4.ts";
import type { Tokenizer } from "../src/tokenizers/types.ts";

const DIR = new URL("./data/tokenizers/phi4_tiny/", import.meta.url).pathname;
const REF = JSON.parse(
  Deno.readTextFileSync(new URL("./fixtures/data/phi4_tokenizer_reference.json", import.meta.url)),
) as {
  texts: { text: string; ids: number[] }[];
  messages: { role: Role; content: string; masked: boolean }[];
  cases: {
    special: "canonical" | "special_tokens_path";
    add_end_tokens: boolean;
    max_seq_len: number | null;
    tokens: number[];
    mask: boolean[];
  }[];
};

function phi4(extra: Record<string, unknown> = {}): Tokenizer {
  return findComponent("torchtune.models.phi4.phi4_tokenizer")!.build({
    vocab_path: `${DIR}vocab.json`,
    merges_path: `${DIR}merges.txt`,
    max_seq_len: null,
    prompt_template: null,
    ...extra,
  }) as Tokenizer;
}

Deno.test("`phi4_tokenizer` encodes text as torchtune's GPT2BaseTokenizer (BOS <|endoftext|>, EOS <|im_end|>)", () => {
  const tok = phi4();
  strictEqual(tok.bosId, 100257);
  strictEqual(tok.eosId, 100265);
  strictEqual(tok.padId, 100349); // <|dummy_85|>
  assertEquals(tok.stopIds, [100265]);
  strictEqual(tok.vocabSize, 100352);
  strictEqual(Object.keys(PHI4_SPECIAL_TOKENS).length, 96);
  for (const { text, ids } of REF.texts) {
    assertEquals(tok.encode(text, { bos: true, eos: true }), ids, text);
    strictEqual(tok.decode(ids), text);
  }
  // special-token text is plain text unless asked (torchtune never splits it)
  const plain = tok.encode("<|im_end|>", { bos: false });
  strictEqual(plain.length > 1, true);
  assertEquals(tok.encode("a<|im_end|>", { bos: false, parseSpecial: true }), [97, 100265]);
  strictEqual(tok.decode([97, 100265, 100300], { skipSpecial: false }), "a<|im_end|><|dummy_36|>");
});

Deno.test("`tokenizeMessages()` phi4 gives torchtune's ids and masks (end tokens, truncation, special_tokens_path)", () => {
  const messages: Message[] = REF.messages.map((m) => ({
    role: m.role,
    content: [m.content],
    masked: m.masked,
    eot: true,
  }));
  const canonical = phi4();
  const small = phi4({ special_tokens_path: `${DIR}special_tokens.json` });
  strictEqual(resolveChatFormat("auto", canonical, "none"), "phi4");
  strictEqual(small.eosId, 376 + 9);
  for (const c of REF.cases) {
    const tok = c.special === "canonical" ? canonical : small;
    const got = tokenizeMessages(tok, messages, "phi4", {
      addEnd: c.add_end_tokens,
      maxSeqLen: c.max_seq_len,
    });
    const name = `${c.special} add_end_tokens=${c.add_end_tokens} max_seq_len=${c.max_seq_len}`;
    assertEquals(got.tokens, c.tokens, name);
    assertEquals(got.mask, c.mask, name);
  }
});

Deno.test("`phi4_tokenizer` refuses a vocab_path without merges_path and left truncation in one line", () => {
  const oneLine = (part: string) => (e: unknown) =>
    e instanceof TuneError && e.message.includes(part) && !e.message.includes("\n");
  throws(() => phi4({ merges_path: null }), oneLine("merges_path"));
  throws(() => phi4({ truncation_type: "left" }), oneLine("truncation_type"));
});

Deno.test("`phi4_tokenizer` reads the vocab and merges of a tokenizer.json given as path", () => {
  const vocab = JSON.parse(Deno.readTextFileSync(`${DIR}vocab.json`));
  const merges = Deno.readTextFileSync(`${DIR}merges.txt`).split("\n").slice(1).filter((l) => l);
  const file = Deno.makeTempFileSync({ suffix: ".json" });
  try {
    Deno.writeTextFileSync(file, JSON.stringify({ model: { type: "BPE", vocab, merges } }));
    const tok = findComponent("torchtune.models.phi4.phi4_tokenizer")!.build({
      path: file,
      max_seq_len: null,
      prompt_template: null,
    }) as Tokenizer;
    assertEquals(tok.encode(REF.texts[0].text, { eos: true }), REF.texts[0].ids);
  } finally {
    Deno.removeSync(file);
  }
});
