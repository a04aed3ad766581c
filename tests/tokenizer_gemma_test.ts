/**
 * torchtune.models.gemma.gemma_tokenizer: a SentencePiece model with torchtune's
 * GemmaTokenizer ids (BOS/EOS from the model, pad 0, stop on EOS). The ids of the text come
 * from the SentencePiece model itself (checked against the sentencepiece library by
 * tests/tokenizer_*; here: the same ids as the plain SentencePiece loader). Exact equality.
 */
import { deepStrictEqual as assertEquals, throws } from "node:assert";
import { findComponent } from "../src/config/registry.ts";
import { TuneError } from "../src/errors.ts";
import { loadTokenizer } from "../src/tokenizers/load.ts";
import "../src/tokenizers/components.ts";
import type { Tokenizer } from "../src/tokenizers/types.ts";

const LLAMA2_SP = new URL("./data/tokenizers/llama2/tokenizer.model", import.meta.url)
  .pathname;
const LLAMA2_BIN = new URL("./data/tokenizers/llama2/tokenizer.bin", import.meta.url)
  .pathname;

function gemma(path: string): Tokenizer {
  return findComponent("torchtune.models.gemma.gemma_tokenizer")!.build({
    path,
    max_seq_len: null,
    prompt_template: null,
  }) as Tokenizer;
}

Deno.test("gemma_tokenizer() encodes as its SentencePiece model with pad id 0 and EOS as the stop token", () => {
  const tok = gemma(LLAMA2_SP);
  const sp = loadTokenizer(LLAMA2_SP);
  assertEquals([tok.bosId, tok.eosId, tok.padId, tok.stopIds], [
    sp.bosId,
    sp.eosId,
    0,
    [sp.eosId],
  ]);
  for (const text of ["Hello world!", "  two  spaces\nand a newline", "naïve café 東京"]) {
    const ids = tok.encode(text, { bos: true, eos: true });
    assertEquals(ids, sp.encode(text, { bos: true, eos: true }));
    assertEquals(tok.decode(ids), sp.decode(ids));
  }
});

Deno.test("gemma_tokenizer() refuses a file that is not a SentencePiece model in one line", () => {
  throws(() => gemma(LLAMA2_BIN), (e: unknown) => {
    const msg = (e as Error).message;
    return e instanceof TuneError && msg.includes("gemma_tokenizer") && !msg.includes("\n");
  });
});
