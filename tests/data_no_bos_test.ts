/**
 * Tokenizers without a BOS token (Qwen2's tokenizer.json reports `bosId` -1): no chat format,
 * sample builder or dataset may write -1 (or any BOS) into the tokens. The Qwen2-style
 * tokenizer.json is the real fixture whose ids come from the `tokenizers` library
 * (tests/fixtures/tokenizer_bpe_cases.json, "hf_qwen2"); Llama 3's format needs its header
 * tokens, so it runs on the byte tokenizer with `noBos`. Token ids are compared exactly.
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert";
import { join } from "node:path";
import { type ChatFormat, tokenizeMessages } from "../src/data/chat_format.ts";
import { sftDataset, textCompletionDataset } from "../src/data/datasets.ts";
import { textCompletionSample } from "../src/data/labels.ts";
import { textMessage } from "../src/data/messages.ts";
import type { Message } from "../src/data/types.ts";
import { loadTokenizer } from "../src/tokenizers/mod.ts";
import type { Tokenizer } from "../src/tokenizers/types.ts";
import { ByteTokenizer, LLAMA3_SPECIALS } from "./data_byte_tokenizer_test.ts";

const FIX = new URL("./fixtures/", import.meta.url).pathname;

/** The Qwen2-style tokenizer.json fixture (bosId -1, <|im_start|>/<|im_end|>). */
function qwenTokenizer(): Tokenizer {
  const cases = JSON.parse(Deno.readTextFileSync(join(FIX, "tokenizer_bpe_cases.json")));
  const dir = Deno.makeTempDirSync({ prefix: "tune_no_bos_" });
  try {
    Deno.writeTextFileSync(join(dir, "tokenizer.json"), JSON.stringify(cases.hf_qwen2.tokenizer));
    return loadTokenizer(join(dir, "tokenizer.json"));
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

function chat(): Message[] {
  return [
    textMessage("system", "Be brief."),
    textMessage("user", "hello"),
    textMessage("assistant", "world"),
  ];
}

Deno.test("`tokenizeMessages()` writes no BOS and no -1 in any format when the tokenizer's bosId is -1", () => {
  const tok = qwenTokenizer();
  strictEqual(tok.bosId, -1);
  const enc = (s: string) => tok.encode(s, { bos: false, eos: false });
  // "none": contents back to back, EOS after the answer, nothing before the first turn.
  const none = tokenizeMessages(tok, chat(), "none");
  deepStrictEqual(none.tokens, [
    ...enc("Be brief."),
    ...enc("hello"),
    ...enc("world"),
    tok.eosId,
  ]);
  deepStrictEqual(none.mask.length, none.tokens.length);
  // chatml (Qwen2.5): starts at <|im_start|>, the last answer is closed by EOS.
  const im = (s: string) => tok.encode(s, { bos: false, eos: false, parseSpecial: true });
  const chatml = tokenizeMessages(tok, chat(), "chatml");
  deepStrictEqual(chatml.tokens, [
    ...im("<|im_start|>system\nBe brief.<|im_end|>\n"),
    ...im("<|im_start|>user\nhello<|im_end|>\n"),
    ...im("<|im_start|>assistant\nworld"),
    tok.eosId,
  ]);
  strictEqual(chatml.tokens[0], 277); // <|im_start|>
  for (const format of ["none", "plain", "llama2", "chatml"] as ChatFormat[]) {
    for (const addEnd of [true, false]) {
      const { tokens, mask } = tokenizeMessages(tok, chat(), format, { addEnd, maxSeqLen: 64 });
      ok(!tokens.includes(-1), `${format} addEnd=${addEnd}: -1 in ${tokens}`);
      ok(tokens.every((t) => t >= 0 && t < tok.vocabSize), `${format}: id out of range`);
      strictEqual(mask.length, tokens.length);
    }
  }
});

Deno.test("`tokenizeMessages()` llama3 format starts at the first header when bosId is -1", () => {
  const msgs = [textMessage("user", "Hi"), textMessage("assistant", "Yo")];
  const withBos = new ByteTokenizer({ specials: LLAMA3_SPECIALS });
  const noBos = new ByteTokenizer({ specials: LLAMA3_SPECIALS, noBos: true });
  strictEqual(noBos.bosId, -1);
  const a = tokenizeMessages(withBos, msgs, "llama3");
  const b = tokenizeMessages(noBos, msgs, "llama3");
  // Same sequence less the leading BOS (and its mask entry); nothing takes its place.
  strictEqual(a.tokens[0], withBos.bosId);
  deepStrictEqual(b.tokens, a.tokens.slice(1));
  deepStrictEqual(b.mask, a.mask.slice(1));
  strictEqual(
    noBos.render(b.tokens),
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
      "<|start_header_id|>assistant<|end_header_id|>\n\nYo<|eot_id|></s>",
  );
  // A generation prompt (no end tokens) and truncation keep the rule.
  const prompt = tokenizeMessages(noBos, msgs.slice(0, 1), "llama3", { addEnd: false });
  strictEqual(prompt.tokens[0], noBos.specialTokens.get("<|start_header_id|>"));
  const short = tokenizeMessages(noBos, msgs, "llama3", { maxSeqLen: 8 });
  deepStrictEqual(short.tokens, [...b.tokens.slice(0, 7), noBos.eosId]);
});

Deno.test("`textCompletionSample()` and the dataset builders give samples without BOS when bosId is -1", async () => {
  const tok = qwenTokenizer();
  const s = textCompletionSample(tok, "hello world", { addEos: true, maxSeqLen: null });
  deepStrictEqual(Array.from(s.tokens), [259, 264, tok.eosId]); // ids from `tokenizers`
  deepStrictEqual(Array.from(s.labels), [264, tok.eosId, -100]);
  const tmp = Deno.makeTempDirSync({ prefix: "tune_no_bos_" });
  try {
    const text = join(tmp, "t.txt");
    Deno.writeTextFileSync(text, "hello world\n\nworld hello\n");
    const tc = await textCompletionDataset({ source: "text", dataFiles: text }).load(tok, {
      maxSeqLen: 32,
    });
    const sft = await sftDataset({
      source: "json",
      dataFiles: join(FIX, "data", "alpaca_tiny.json"),
      transform: { kind: "alpaca" },
      trainOnInput: false,
    }).load(tok, { maxSeqLen: 256 });
    // The same Alpaca rows on the SentencePiece-style path ("none"), where BOS would go.
    const plain = await sftDataset({
      source: "json",
      dataFiles: join(FIX, "data", "alpaca_tiny.json"),
      transform: { kind: "alpaca" },
      trainOnInput: false,
      chatFormat: "none",
    }).load(tok, { maxSeqLen: 256 });
    strictEqual(tc.samples.length, 2);
    strictEqual(sft.samples.length, 3);
    strictEqual(plain.samples.length, 3);
    for (const sample of [...tc.samples, ...sft.samples, ...plain.samples]) {
      const ids = Array.from(sample.tokens);
      ok(!ids.includes(-1), `-1 in ${ids}`);
      ok(ids.every((t) => t >= 0 && t < tok.vocabSize), `id out of range in ${ids}`);
    }
    deepStrictEqual(Array.from(tc.samples[1].tokens), [...tok.encode("world hello"), tok.eosId]);
    // sft on a tokenizer with <|im_start|> picks chatml ("auto"): the first id is <|im_start|>.
    strictEqual(sft.samples[0].tokens[0], 277);
    // "none": the sample starts with the prompt's own first token ("Below is an instruction").
    strictEqual(plain.samples[0].tokens[0], tok.encode("Below")[0]);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});
