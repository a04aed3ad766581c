/**
 * SentencePiece unigram models: two tiny models trained with the sentencepiece library and the
 * ids it gives (tests/reference/tokenizer_unigram_reference.py -> tests/data/tokenizers/unigram/):
 * `byte_fallback.model` (nmt_nfkc charsmap, byte fallback, dummy prefix, extra whitespace
 * removed) and `plain.model` (identity, no byte fallback, no dummy prefix, whitespace kept).
 * The same script re-verified Llama 2's BPE ids (cases.jsonl) and adds ids for these texts.
 * Ids are compared exactly.
 */
import { deepStrictEqual, strictEqual, throws } from "node:assert";
import { loadTokenizer } from "../src/tokenizers/mod.ts";
import { parseSentencePieceModel } from "../src/tokenizers/sentencepiece_model.ts";
import { TuneError } from "../src/errors.ts";

const DIR = new URL("./data/tokenizers/unigram/", import.meta.url).pathname;
interface Case {
  text: string;
  ids: number[];
  decoded?: string;
}
const ref: Record<string, Case[]> & { llama2_checked: number } = JSON.parse(
  Deno.readTextFileSync(`${DIR}cases.json`),
);

for (const name of ["byte_fallback", "plain"]) {
  Deno.test(`SentencePieceTokenizer unigram (${name}.model) encodes as sentencepiece does`, () => {
    const tok = loadTokenizer(`${DIR}${name}.model`);
    strictEqual(ref[name].length >= 15, true);
    for (const c of ref[name]) {
      const label = JSON.stringify(c.text);
      deepStrictEqual(tok.encode(c.text, { bos: false }), c.ids, label);
      deepStrictEqual(tok.encode(c.text), [tok.bosId, ...c.ids], label);
      strictEqual(tok.decode(c.ids), c.decoded, label);
    }
  });
}

Deno.test("the unigram cases exercise byte fallback, the NFKC charsmap and unknown runs", () => {
  const spec = parseSentencePieceModel(Deno.readFileSync(`${DIR}byte_fallback.model`), "bf");
  strictEqual(spec.modelType, "unigram");
  const emoji = ref.byte_fallback.find((c) => c.text.startsWith("emoji"))!;
  // 🦊 and 日本語 are not pieces: their UTF-8 bytes come out as BYTE pieces (type 6)
  const byteIds = emoji.ids.filter((id) => spec.pieces[id].type === 6);
  strictEqual(byteIds.length >= 4, true);
  // nmt_nfkc maps fullwidth letters and digits to ASCII
  const wide = ref.byte_fallback.find((c) => c.text.startsWith("ＦＵＬＬ"))!;
  strictEqual(wide.decoded, "FULLWIDTH fox 123");
  // without byte fallback, an unknown run is one <unk> (id 0)
  const unk = ref.plain.find((c) => c.text.startsWith("emoji"))!;
  strictEqual(unk.ids.includes(0), true);
});

Deno.test("Llama 2 BPE ids for the unigram texts match sentencepiece (re-verified cases.jsonl)", () => {
  const tok = loadTokenizer(
    new URL("./data/tokenizers/llama2/tokenizer.model", import.meta.url).pathname,
  );
  strictEqual(ref.llama2_checked, 10);
  for (const c of ref.llama2_cases) {
    deepStrictEqual(tok.encode(c.text, { bos: false }), c.ids, JSON.stringify(c.text));
  }
});

Deno.test("parseSentencePieceModel() refuses word and char models in one line", () => {
  // ModelProto: one piece, then trainer_spec with model_type = 3 (WORD)
  const piece = [0x0a, 0x05, 0x0a, 0x01, 0x61, 0x15, 0x00];
  const bytes = new Uint8Array([
    ...piece.slice(0, 2),
    0x0a,
    0x01,
    0x61,
    0x10,
    0x01,
    0x12,
    0x02,
    0x18,
    0x03,
  ]);
  throws(
    () => parseSentencePieceModel(bytes, "w.model"),
    (e) =>
      e instanceof TuneError &&
      /word model; tune reads SentencePiece BPE and unigram/.test(e.message),
  );
});
