/**
 * SentencePiece `.model` and llama2.c `tokenizer.bin` tokenizers against ids from the
 * sentencepiece library (exact equality; there is no tolerance for token ids):
 * tests/data/tokenizers/llama2/cases.jsonl and tests/fixtures/tokenizer_sp_cases.json
 * (made by tests/reference/tokenizer_reference.py).
 */
import { deepStrictEqual as assertEquals, strictEqual as assertStrictEquals } from "node:assert";
import { loadTokenizer } from "../src/tokenizers/mod.ts";
import type { Tokenizer } from "../src/tokenizers/types.ts";

const shared = (p: string) => new URL(`./data/${p}`, import.meta.url).pathname;
const fixture = (p: string) => new URL(`./fixtures/${p}`, import.meta.url).pathname;

interface Case {
  text: string;
  ids: number[];
  decoded: string;
}

const llama2Cases: Case[] = Deno.readTextFileSync(shared("tokenizers/llama2/cases.jsonl"))
  .trim().split("\n").map((l) => JSON.parse(l));
const extra = JSON.parse(Deno.readTextFileSync(fixture("tokenizer_sp_cases.json")));

const llama2Model = loadTokenizer(shared("tokenizers/llama2/tokenizer.model"));
const llama2Bin = loadTokenizer(shared("tokenizers/llama2/tokenizer.bin"));

function checkCases(tok: Tokenizer, cases: Case[], label: string): void {
  for (const c of cases) {
    const what = `${label} ${JSON.stringify(c.text.slice(0, 60))}`;
    assertEquals(tok.encode(c.text, { bos: false }), c.ids, `encode ${what}`);
    assertStrictEquals(tok.decode(c.ids), c.decoded, `decode ${what}`);
  }
}

for (
  const [name, tok] of [["tokenizer.model", llama2Model], ["tokenizer.bin", llama2Bin]] as const
) {
  Deno.test(`loadTokenizer() ${name} encodes and decodes every case of llama2/cases.jsonl exactly`, () => {
    assertEquals(llama2Cases.length, 10);
    checkCases(tok, llama2Cases, name);
  });

  Deno.test(`loadTokenizer() ${name} has Llama 2's special ids and adds BOS/EOS on request`, () => {
    assertEquals([tok.vocabSize, tok.bosId, tok.eosId], [32000, 1, 2]);
    assertEquals(tok.stopIds, [2]);
    assertEquals(tok.encode("Hello world"), [1, 15043, 3186]); // BOS by default
    assertEquals(tok.encode("Hello world", { bos: true, eos: true }), [1, 15043, 3186, 2]);
    assertEquals(tok.encode("", { bos: false }), []);
    assertEquals(tok.specialTokens?.get("<s>"), 1);
    assertStrictEquals(tok.decode([1, 15043, 3186, 2]), "Hello world");
    assertStrictEquals(
      tok.decode([1, 15043, 3186, 2], { skipSpecial: false }),
      "<s>Hello world</s>",
    );
  });

  Deno.test(`loadTokenizer() ${name} matches sentencepiece on extra unicode, whitespace and long texts`, () => {
    checkCases(tok, extra.llama2, name);
    for (const c of extra.llama2_decode) {
      assertStrictEquals(tok.decode(c.ids), c.decoded, `decode ${JSON.stringify(c.ids)}`);
    }
  });
}

Deno.test("loadTokenizer() reads SentencePiece models with charsmap rules, user symbols, no dummy prefix", () => {
  for (const name of ["small", "noprefix"]) {
    const ref = extra[`sp_${name}`];
    const tok = loadTokenizer(fixture(`tokenizer_sp_${name}.model`));
    assertEquals(
      [tok.vocabSize, tok.bosId, tok.eosId, tok.padId],
      [ref.vocab, ref.bos, ref.eos, ref.pad >= 0 ? ref.pad : ref.eos],
      name,
    );
    checkCases(tok, ref.cases, name);
  }
});

Deno.test("loadTokenizer() reads a SentencePiece unigram model (ids from sentencepiece 0.1.97)", () => {
  // ids printed by /usr/bin/python3 with python3-sentencepiece for this fixture; the full unigram
  // checks are in tokenizer_unigram_test.ts
  const tok = loadTokenizer(fixture("tokenizer_sp_unigram.model"));
  const [a, b] = [[59, 44, 58, 54, 54, 56, 59, 37, 56, 55, 54, 49], [
    6,
    59,
    21,
    41,
    51,
    50,
    42,
    11,
    13,
  ]];
  assertEquals(tok.encode("hello world", { bos: false }), a);
  assertEquals(tok.encode("the quick brown fox", { bos: false }), b);
});

Deno.test("loadTokenizer() aidreams260K tokenizer.bin decodes the reference continuation", () => {
  const tok = loadTokenizer(shared("models/aidreams260K/tokenizer.bin"));
  assertEquals([tok.vocabSize, tok.bosId, tok.eosId], [512, 1, 2]);
  const ref = Deno.readTextFileSync(shared("models/aidreams260K/reference.jsonl")).trim().split(
    "\n",
  )
    .map((l) => JSON.parse(l)).find((r) => r.case === "greedy");
  assertStrictEquals(tok.decode(ref.ids), ref.text);
  // the decoded text encodes back to ids that decode to the same text
  assertStrictEquals(tok.decode(tok.encode(ref.text)), ref.text);
});

Deno.test("encode() of Llama 2 tokenizer.model handles a 100k-character text", () => {
  const text = llama2Cases.map((c) => c.text).join(" ").repeat(60);
  const ids = llama2Model.encode(text, { bos: false });
  assertStrictEquals(llama2Model.decode(ids), text);
  assertEquals(llama2Bin.encode(text, { bos: false }), ids);
});
