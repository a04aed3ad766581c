/**
 * `loadTokenizer()` format detection and its one-line TuneErrors (missing, corrupt, unsupported
 * files), `checkVocabMatches()`, and the registered tokenizer components.
 */
import { deepStrictEqual as assertEquals, strictEqual as assertStrictEquals } from "node:assert";
import { componentsOfKind, findComponent } from "../src/config/registry.ts";
import { TuneError } from "../src/errors.ts";
import "../src/tokenizers/components.ts";
import { checkVocabMatches, detectTokenizerFormat, loadTokenizer } from "../src/tokenizers/mod.ts";
import type { Tokenizer } from "../src/tokenizers/types.ts";

const shared = (p: string) => new URL(`./data/${p}`, import.meta.url).pathname;
const LLAMA2_MODEL = shared("tokenizers/llama2/tokenizer.model");
const LLAMA2_BIN = shared("tokenizers/llama2/tokenizer.bin");
const AIDREAMS_BIN = shared("models/aidreams260K/tokenizer.bin");

/** Run `fn`, expect a one-line TuneError whose message contains every `parts`; returns it. */
function expectTuneError(fn: () => unknown, ...parts: string[]): TuneError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  if (!(err instanceof TuneError)) throw new Error(`expected a TuneError, got ${err}`);
  assertEquals(err.message.includes("\n"), false, `one line: ${err.message}`);
  for (const p of parts) assertEquals(err.message.includes(p), true, `"${p}" in: ${err.message}`);
  return err;
}

function withFile<T>(name: string, data: Uint8Array | string, fn: (path: string) => T): T {
  const dir = Deno.makeTempDirSync({ prefix: "tune_tok_load_" });
  const path = `${dir}/${name}`;
  try {
    if (typeof data === "string") Deno.writeTextFileSync(path, data);
    else Deno.writeFileSync(path, data);
    return fn(path);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("detectTokenizerFormat() tells protobuf, llama2.c, tiktoken and JSON apart", () => {
  assertStrictEquals(detectTokenizerFormat(Deno.readFileSync(LLAMA2_MODEL)), "sentencepiece");
  assertStrictEquals(detectTokenizerFormat(Deno.readFileSync(LLAMA2_BIN)), "llama2c");
  // aidreams' tokenizer.bin starts with byte 0x0a like a protobuf; its lengths decide
  assertStrictEquals(detectTokenizerFormat(Deno.readFileSync(AIDREAMS_BIN)), "llama2c");
  const enc = new TextEncoder();
  assertStrictEquals(detectTokenizerFormat(enc.encode("IQ== 0\nIg== 1\n")), "tiktoken");
  assertStrictEquals(detectTokenizerFormat(enc.encode(' \n{"model": {}}')), "tokenizer.json");
  assertStrictEquals(detectTokenizerFormat(enc.encode("hello")), undefined);
});

Deno.test("loadTokenizer() names a missing file or a directory in a one-line TuneError", () => {
  expectTuneError(
    () => loadTokenizer("/nonexistent/tokenizer.model"),
    "/nonexistent/tokenizer.model",
    "not found",
  );
  const dir = Deno.makeTempDirSync();
  try {
    expectTuneError(() => loadTokenizer(dir), dir, "is a directory");
  } finally {
    Deno.removeSync(dir);
  }
});

Deno.test("loadTokenizer() rejects empty, random, truncated and malformed files with TuneErrors", () => {
  withFile(
    "tokenizer.model",
    new Uint8Array(0),
    (p) => expectTuneError(() => loadTokenizer(p), p, "empty file"),
  );
  const noise = new Uint8Array(4096);
  for (let i = 0; i < noise.length; i++) noise[i] = (i * 2654435761) >>> 24;
  withFile("tokenizer.model", noise, (p) => expectTuneError(() => loadTokenizer(p), p, "corrupt"));
  const model = Deno.readFileSync(LLAMA2_MODEL);
  withFile(
    "tokenizer.model",
    model.subarray(0, 100_000),
    (p) => expectTuneError(() => loadTokenizer(p), p, "corrupt or truncated"),
  );
  const bin = Deno.readFileSync(AIDREAMS_BIN);
  withFile(
    "tokenizer.bin",
    bin.subarray(0, 3000),
    (p) => expectTuneError(() => loadTokenizer(p), p, "corrupt"),
  );
  withFile(
    "tokenizer.model",
    "IQ== 0\nIg== 1\nnot base64!! x\n",
    (p) => expectTuneError(() => loadTokenizer(p), p, "corrupt at line 3"),
  );
  withFile(
    "tokenizer.model",
    "IQ== 0\nIg== 1\n",
    (p) => expectTuneError(() => loadTokenizer(p), p, "lacks the single byte 0x00"),
  );
  withFile(
    "tokenizer.json",
    '{"model": {"type": "BPE", "vocab": ',
    (p) => expectTuneError(() => loadTokenizer(p), p, "invalid JSON"),
  );
  withFile(
    "tokenizer.json",
    '{"model": {"type": "WordPiece", "vocab": {"a": 0}}}',
    (p) => expectTuneError(() => loadTokenizer(p), p, "WordPiece model"),
  );
  withFile(
    "tokenizer.json",
    '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "BertPreTokenizer"}}',
    (p) => expectTuneError(() => loadTokenizer(p), p, "BertPreTokenizer"),
  );
});

Deno.test("checkVocabMatches() throws naming both sizes when the tokenizer outgrows the model", () => {
  const tok = loadTokenizer(LLAMA2_MODEL);
  expectTuneError(
    () => checkVocabMatches(tok, 512, LLAMA2_MODEL),
    "tokenizer and model vocab mismatch",
    "32000",
    "512",
    LLAMA2_MODEL,
  );
  checkVocabMatches(tok, 32000, LLAMA2_MODEL);
  checkVocabMatches(tok, 32064, LLAMA2_MODEL); // padded embeddings are fine
  checkVocabMatches(loadTokenizer(AIDREAMS_BIN), 512, AIDREAMS_BIN);
});

Deno.test("tokenizer components build from torchtune names with max_seq_len", () => {
  const names = componentsOfKind("tokenizer").map((c) => c.name);
  for (
    const n of [
      "torchtune.models.llama2.llama2_tokenizer",
      "torchtune.models.llama3.llama3_tokenizer",
      "torchtune.models.mistral.mistral_tokenizer",
      "torchtune.models.qwen2_5.qwen2_5_tokenizer",
      "torchtune.models.qwen2.qwen2_tokenizer",
      "tune.tokenizers.load",
    ]
  ) assertEquals(names.includes(n), true, n);
  const build = (name: string, args: Record<string, unknown>) =>
    findComponent(name)!.build({ max_seq_len: null, prompt_template: null, ...args }) as Tokenizer;
  const llama2 = build("torchtune.models.llama2.llama2_tokenizer", {
    path: LLAMA2_MODEL,
    max_seq_len: 4096,
  });
  assertEquals([llama2.maxSeqLen, llama2.bosId, llama2.eosId], [4096, 1, 2]);
  assertEquals(llama2.encode("Hello world"), [1, 15043, 3186]);
  const mistral = build("torchtune.models.mistral.mistral_tokenizer", { path: LLAMA2_BIN });
  assertEquals(mistral.encode("Hello world", { eos: true }), [1, 15043, 3186, 2]);
  const generic = build("tune.tokenizers.load", { path: AIDREAMS_BIN });
  assertEquals([generic.vocabSize, generic.maxSeqLen], [512, null]);
  expectTuneError(
    () =>
      build("torchtune.models.llama2.llama2_tokenizer", {
        path: LLAMA2_MODEL,
        prompt_template: "x",
      }),
    "prompt_template",
    "mapping {role: [prepend, append]}",
  );
  const chat = build("torchtune.models.llama2.llama2_tokenizer", {
    path: LLAMA2_MODEL,
    prompt_template: "torchtune.models.llama2.Llama2ChatTemplate",
  });
  assertEquals(chat.promptTemplate?.chatFormat, "llama2");
  expectTuneError(
    () => build("torchtune.models.llama2.llama2_tokenizer", { path: LLAMA2_MODEL, max_seq_len: 0 }),
    "max_seq_len",
  );
  // llama3_tokenizer: a tiktoken file (256 single bytes + one merge "ab") gets Llama 3's specials
  const lines = Array.from({ length: 256 }, (_, b) => `${btoa(String.fromCharCode(b))} ${b}`);
  lines.push(`${btoa("ab")} 256`);
  withFile("tokenizer.model", lines.join("\n") + "\n", (p) => {
    const llama3 = build("torchtune.models.llama3.llama3_tokenizer", {
      path: p,
      special_tokens_path: null,
    });
    assertEquals([llama3.vocabSize, llama3.bosId, llama3.eosId, llama3.padId], [
      513,
      257,
      258,
      261,
    ]);
    assertEquals(llama3.encode("ab", { eos: true }), [257, 256, 258]);
    assertEquals(llama3.stopIds, [258, 266, 265]); // <|end_of_text|>, <|eot_id|>, <|eom_id|>
  });
});
