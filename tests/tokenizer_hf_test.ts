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

Deno.test("HfBpeTokenizer from Llama 2 vocab as tokenizer.json matches sentencepiece ids (cases.jsonl + fixture)", async () => {
  // Build Llama 2's tokenizer.json the way transformers' converter does: the SentencePiece
  // vocab, merges = every split of a piece into two pieces, ordered by the merged piece's
  // score (then by the ids of its parts), byte fallback.
  const { parseSentencePieceModel } = await import("../src/tokenizers/sentencepiece_model.ts");
  const modelPath = new URL("./data/tokenizers/llama2/tokenizer.model", import.meta.url).pathname;
  const spec = parseSentencePieceModel(Deno.readFileSync(modelPath), modelPath);
  const vocab: Record<string, number> = {};
  spec.pieces.forEach((p, id) => (vocab[p.piece] = id));
  const merges: [number, number, number, string, string][] = [];
  spec.pieces.forEach((p, id) => {
    if (p.type !== 1) return; // NORMAL pieces only
    const chars = [...p.piece];
    for (let k = 1; k < chars.length; k++) {
      const a = chars.slice(0, k).join("");
      const b = chars.slice(k).join("");
      if (a in vocab && b in vocab) merges.push([-p.score, vocab[a], vocab[b], a, b]);
    }
    void id;
  });
  merges.sort((x, y) => x[0] - y[0] || x[1] - y[1] || x[2] - y[2]);
  const json = {
    added_tokens: [0, 1, 2].map((id) => ({ id, content: spec.pieces[id].piece, special: true })),
    // the normalizer of Llama 2's published tokenizer.json (a Metaspace "first" pre-tokenizer
    // would add no ▁ before text that starts with a space, unlike sentencepiece)
    normalizer: {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: "\u2581" },
        { type: "Replace", pattern: { String: " " }, content: "\u2581" },
      ],
    },
    pre_tokenizer: null,
    post_processor: {
      type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
    },
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "\u2581" }, content: " " },
        { type: "ByteFallback" },
        { type: "Fuse" },
        { type: "Strip", content: " ", start: 1, stop: 0 },
      ],
    },
    model: {
      type: "BPE",
      unk_token: "<unk>",
      fuse_unk: true,
      byte_fallback: true,
      vocab,
      merges: merges.map((m) => [m[3], m[4]]),
    },
  };
  const tok = new HfBpeTokenizer(json, "llama2 tokenizer.json");
  assertEquals([tok.vocabSize, tok.bosId, tok.eosId], [32000, 1, 2]);
  const cases: Case[] = Deno.readTextFileSync(
    new URL("./data/tokenizers/llama2/cases.jsonl", import.meta.url),
  ).trim().split("\n").map((l) => JSON.parse(l));
  const extra = JSON.parse(
    Deno.readTextFileSync(new URL("./fixtures/tokenizer_sp_cases.json", import.meta.url)),
  ).llama2 as Case[];
  for (const c of [...cases, ...extra]) {
    // parseSpecial=false: the text "<s>" is plain text for sentencepiece
    const ids = tok.encode(c.text, { bos: false, parseSpecial: false });
    assertEquals(ids, c.ids, JSON.stringify(c.text));
    assertStrictEquals(tok.decode([1, ...c.ids]), c.decoded ?? c.text, JSON.stringify(c.text));
  }
});

Deno.test("qwen2_tokenizer and qwen3_tokenizer end turns with EOS <|im_end|>, pad <|endoftext|> (torchtune's defaults)", () => {
  // torchtune (models/qwen2/_tokenizer.py, qwen3/_tokenizer.py): eos_token=IM_END,
  // pad_token=ENDOFTEXT, stop_tokens [eos, pad]; Qwen3 adds <tool_response>..</think> 151665-8
  const spec = ref.hf_qwen2.tokenizer;
  const merges = "#version: 0.2\n" +
    spec.model.merges.map((m: string[]) => m.join(" ")).join("\n") + "\n";
  withFiles({ "vocab.json": spec.model.vocab, "merges.txt": merges }, (dir) => {
    for (const name of ["qwen2.qwen2_tokenizer", "qwen3.qwen3_tokenizer"]) {
      const tok = findComponent(`torchtune.models.${name}`)!.build({
        path: `${dir}/vocab.json`,
        merges_file: `${dir}/merges.txt`,
        max_seq_len: null,
        prompt_template: null,
        chat_template: null,
      }) as Tokenizer;
      assertEquals([tok.bosId, tok.eosId, tok.padId], [-1, 151645, 151643], name);
      assertEquals(tok.stopIds, [151645, 151643], name);
    }
    const qwen3 = findComponent("torchtune.models.qwen3.qwen3_tokenizer")!.build({
      path: `${dir}/vocab.json`,
      merges_file: `${dir}/merges.txt`,
      max_seq_len: null,
      prompt_template: null,
      chat_template: null,
    }) as Tokenizer;
    assertEquals(qwen3.encode("<tool_response>\n<think>", { bos: false }).slice(0, 1), [151665]);
    assertEquals(qwen3.specialTokens?.get("</think>"), 151668);
  });
});
