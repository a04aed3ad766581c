/**
 * Hugging Face tokenizer.json BPE: byte-level (Llama 3, Qwen2 styles) and SentencePiece-style
 * (Llama 2: Prepend/Replace normalizer or Metaspace pre-tokenizer, byte fallback) variants.
 * Small tokenizer.json files are written to a temp dir from tests/fixtures/tokenizer_bpe_cases.json,
 * whose ids come from the `tokenizers` library (tests/reference/tokenizer_bpe_reference.py);
 * a few ids are also derived by hand below. Token ids are compared exactly.
 */
import { deepStrictEqual as assertEquals, strictEqual as assertStrictEquals } from "node:assert";
import { findComponent } from "../src/config/registry.ts";
import "../src/tokenizers/components.ts";
import { HfBpeTokenizer, loadTokenizer } from "../src/tokenizers/mod.ts";
import type { Tokenizer } from "../src/tokenizers/types.ts";

interface Case {
  text: string;
  ids: number[];
  decoded?: string;
  with_bos?: number[];
}
// deno-lint-ignore no-explicit-any
const ref: Record<string, { tokenizer: any; cases: Case[] }> = JSON.parse(
  Deno.readTextFileSync(new URL("./fixtures/tokenizer_bpe_cases.json", import.meta.url)),
);

/** Write `files` (name -> JSON) to a fresh temp dir, run `fn` with the dir, remove it. */
function withFiles<T>(files: Record<string, unknown>, fn: (dir: string) => T): T {
  const dir = Deno.makeTempDirSync({ prefix: "tune_hf_tok_" });
  try {
    for (const [name, json] of Object.entries(files)) {
      Deno.writeTextFileSync(
        `${dir}/${name}`,
        typeof json === "string" ? json : JSON.stringify(json),
      );
    }
    return fn(dir);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

function load(name: string, extra: Record<string, unknown> = {}): Tokenizer {
  return withFiles(
    { "tokenizer.json": ref[name].tokenizer, ...extra },
    (dir) => loadTokenizer(`${dir}/tokenizer.json`),
  );
}

for (
  const name of [
    "hf_llama3",
    "hf_qwen2",
    "hf_llama2_legacy",
    "hf_llama2_metaspace",
    "hf_no_byte_fallback",
  ]
) {
  Deno.test(`loadTokenizer() ${name} tokenizer.json matches the tokenizers library`, () => {
    const tok = load(name);
    assertEquals(tok instanceof HfBpeTokenizer, true);
    for (const c of ref[name].cases) {
      const label = `${name} ${JSON.stringify(c.text)}`;
      assertEquals(tok.encode(c.text, { bos: false }), c.ids, label);
      assertStrictEquals(tok.decode(c.ids), c.decoded ?? c.text, label);
      if (c.with_bos) assertEquals(tok.encode(c.text), c.with_bos, label);
    }
  });
}

Deno.test("encode() of a byte-level tokenizer.json equals the tiktoken file it mirrors", () => {
  // same tokens; tiktoken merges by token rank, tokenizer.json by merge list
  const hf = load("hf_llama3");
  const tiktokenRef = (ref as Record<string, unknown>).tiktoken as { cases: Case[] };
  for (const c of tiktokenRef.cases) {
    assertEquals(hf.encode(c.text, { bos: false, parseSpecial: false }), c.ids);
  }
});

Deno.test("encode() of byte-level tokenizer.json gives hand-derived ids (ignore_merges, NFC, specials)", () => {
  const llama3 = load("hf_llama3"); // 276 base tokens, <|begin_of_text|> = 276
  const qwen = load("hf_qwen2"); // <|endoftext|> 276, <|im_start|> 277, <|im_end|> 278, <think> 279
  // "xyz" (275) is in the vocab with no merge reaching it: only ignore_merges finds it
  assertEquals(llama3.encode("xyz", { bos: false }), [275]);
  assertEquals(qwen.encode("xyz"), [120, 121, 122]);
  // Qwen2 splits digits one by one, Llama 3 in groups of three
  assertEquals(qwen.encode("123"), [49, 50, 51]);
  assertEquals(llama3.encode("123", { bos: false }), [270]);
  // NFC: "e" + combining acute becomes "é", then c-a-f-é merges to "café" (268)
  assertEquals(qwen.encode("cafe\u0301"), [268]);
  // BOS from the TemplateProcessing post-processor; Qwen2 has none
  assertEquals([llama3.bosId, qwen.bosId], [276, -1]);
  assertEquals(llama3.encode("hello"), [276, 259]);
  // special tokens are read from text by default (as `tokenizers` does), unless parseSpecial=false
  assertEquals(qwen.encode("<|im_start|>hello<|im_end|>"), [277, 259, 278]);
  assertEquals(qwen.encode("<|im_start|>", { parseSpecial: false }).includes(277), false);
  // a non-special added token is always split off, and decoded even when skipping specials
  assertEquals(qwen.encode("<think>", { parseSpecial: false }), [279]);
  assertStrictEquals(qwen.decode([277, 259, 279, 278]), "hello<think>");
  assertStrictEquals(
    qwen.decode([277, 259, 278], { skipSpecial: false }),
    "<|im_start|>hello<|im_end|>",
  );
});

Deno.test("encode() of Llama 2-style tokenizer.json gives hand-derived ids (byte fallback, Metaspace)", () => {
  const legacy = load("hf_llama2_legacy");
  const meta = load("hf_llama2_metaspace");
  // vocab: <unk> 0, <s> 1, </s> 2, <0x00>.. 3..258, ▁ 259, h 260, e 261, l 262, o 263, w 264,
  // r 265, d 266, 東 267, a 268, then merges ▁h 269, el 270, lo 271, ▁hel 272, ▁hello 273, ...
  for (const tok of [legacy, meta]) {
    assertEquals([tok.bosId, tok.eosId], [1, 2]);
    assertEquals(tok.encode("hello world", { bos: false }), [273, 278]);
    // "i" is not in the vocab: byte <0x69> = 3 + 0x69; the emoji is four byte pieces
    assertEquals(tok.encode("hi🙂", { bos: false }), [269, 108, 243, 162, 156, 133]);
    assertStrictEquals(tok.decode([1, 269, 108, 243, 162, 156, 133, 2]), "hi🙂");
  }
  // after a special token, the Metaspace "first" scheme adds no ▁ (h el lo), Prepend does
  assertEquals(meta.encode("<s>hello", { bos: false }), [1, 260, 270, 271]);
  assertEquals(legacy.encode("<s>hello", { bos: false }), [1, 273]);
});

Deno.test("loadTokenizer() takes bos/eos/pad from tokenizer_config.json beside tokenizer.json", () => {
  const config = {
    bos_token: { content: "<|begin_of_text|>" },
    eos_token: "<|eot_id|>",
    pad_token: "<|end_of_text|>",
  };
  const tok = withFiles(
    { "tokenizer.json": ref.hf_llama3.tokenizer, "tokenizer_config.json": config },
    (dir) => loadTokenizer(`${dir}/tokenizer.json`),
  );
  // <|begin_of_text|> 276, <|end_of_text|> 277, <|eot_id|> 280
  assertEquals([tok.bosId, tok.eosId, tok.padId], [276, 280, 277]);
  assertEquals(tok.stopIds, [280, 277]);
  assertEquals(tok.vocabSize, 281);
});

Deno.test("qwen2_5_tokenizer component reads tokenizer.json or vocab.json + merges.txt alike", () => {
  const spec = ref.hf_qwen2.tokenizer;
  const merges = "#version: 0.2\n" +
    spec.model.merges.map((m: string[]) => m.join(" ")).join("\n") + "\n";
  const component = findComponent("torchtune.models.qwen2_5.qwen2_5_tokenizer")!;
  withFiles(
    { "tokenizer.json": spec, "vocab.json": spec.model.vocab, "merges.txt": merges },
    (dir) => {
      const fromJson = component.build({
        path: `${dir}/tokenizer.json`,
        merges_file: null,
        max_seq_len: 64,
        prompt_template: null,
      }) as Tokenizer;
      // <|im_end|> is 278 in this small file; Qwen2.5's own ids for vocab.json (151645 ...)
      assertEquals([fromJson.bosId, fromJson.eosId, fromJson.padId, fromJson.maxSeqLen], [
        -1,
        278,
        276,
        64,
      ]);
      const fromVocab = component.build({
        path: `${dir}/vocab.json`,
        merges_file: `${dir}/merges.txt`,
        max_seq_len: null,
        prompt_template: null,
      }) as Tokenizer;
      assertEquals([fromVocab.bosId, fromVocab.eosId, fromVocab.padId], [-1, 151645, 151643]);
      for (const c of ref.hf_qwen2.cases) {
        if (/<\|\w+\|>|<think>|<tool>/.test(c.text)) continue; // added tokens differ in id
        assertEquals(fromVocab.encode(c.text), c.ids, JSON.stringify(c.text));
        assertEquals(fromJson.encode(c.text), c.ids, JSON.stringify(c.text));
      }
    },
  );
});
