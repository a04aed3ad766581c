/**
 * The data pipeline with the real Llama 2 SentencePiece tokenizer (tests/data, loaded with
 * src/tokenizers' loadTokenizer), against ids written by the SentencePiece library following
 * torchtune's Llama2Tokenizer.tokenize_messages (tests/fixtures/data/llama2_reference.py).
 * Tolerance: exact ids, masks and labels.
 */
import { deepStrictEqual, strictEqual } from "node:assert";
import "../src/data/components.ts";
import { instantiate } from "../src/config/instantiate.ts";
import { resolveComponent } from "../src/config/resolve.ts";
import {
  addsDummyPrefix,
  alpacaPrompt,
  type DatasetBuilder,
  IGNORE_INDEX,
  type Message,
  textCompletionSample,
  textMessage,
  tokenizeMessages,
} from "../src/data/mod.ts";
import { loadTokenizer } from "../src/tokenizers/mod.ts";

const MODEL = new URL("./data/tokenizers/llama2/tokenizer.model", import.meta.url).pathname;
const tok = loadTokenizer(MODEL);
type Ref = Record<string, { tokens: number[]; mask: boolean[] | null }>;
const REF: Ref = JSON.parse(
  Deno.readTextFileSync(new URL("./fixtures/data/llama2_reference.json", import.meta.url)),
);

/** labels[t] = mask[t + 1] ? -100 : tokens[t + 1]; last -100 (torchtune's SFTTransform). */
function expectedLabels(tokens: number[], mask: boolean[]): number[] {
  return tokens.map((
    _,
    t,
  ) => (t + 1 < tokens.length && !mask[t + 1] ? tokens[t + 1] : IGNORE_INDEX));
}

const RESPONSE = "1. Eat a balanced diet.\n2. Exercise.\n3. Sleep well.";

function alpaca(): Message[] {
  return [
    textMessage("user", alpacaPrompt("Give three tips for staying healthy."), { masked: true }),
    textMessage("assistant", RESPONSE),
  ];
}

Deno.test("`tokenizeMessages()` matches torchtune's Llama 2 ids for Alpaca prompts", () => {
  strictEqual(addsDummyPrefix(tok), true);
  const a = tokenizeMessages(tok, alpaca(), "none");
  deepStrictEqual(a, REF.alpaca_no_input);
  // The prompt part equals SentencePiece's own encoding in tests/data cases.jsonl.
  const cases = Deno.readTextFileSync(
    new URL("./data/tokenizers/llama2/cases.jsonl", import.meta.url),
  )
    .trim().split("\n").map((l) => JSON.parse(l));
  const prompt = cases.find((c) => c.text === alpacaPrompt("Give three tips for staying healthy."));
  deepStrictEqual(a.tokens.slice(1, 1 + prompt.ids.length), prompt.ids);
  const withInput = tokenizeMessages(tok, [
    textMessage("user", alpacaPrompt("Translate to French.", "Good morning"), { masked: true }),
    textMessage("assistant", "Bonjour"),
  ], "none");
  deepStrictEqual(withInput, REF.alpaca_input);
  deepStrictEqual(
    tokenizeMessages(tok, alpaca(), "none", { maxSeqLen: 16 }),
    REF.alpaca_no_input_max16,
  );
});

Deno.test("`tokenizeMessages()` llama2 format gives SentencePiece's ids of Meta's [INST] text", () => {
  const msgs = [
    textMessage("system", "You are terse.", { masked: true }),
    textMessage("user", "What is 2+2?", { masked: true }),
    textMessage("assistant", "4."),
    textMessage("user", "And 3+3?", { masked: true }),
    textMessage("assistant", " 6."),
  ];
  deepStrictEqual(tokenizeMessages(tok, msgs, "llama2"), REF.llama2_chat);
  // The tokens decode to exactly Meta's template text (SentencePiece's own decode gives the same).
  strictEqual(
    tok.decode(REF.llama2_chat.tokens),
    "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nWhat is 2+2? [/INST] 4. [INST] And 3+3? [/INST]  6.",
  );
});

Deno.test("`alpaca_dataset` with the Llama 2 tokenizer gives torchtune's tokens and labels", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tune_data_llama2_" });
  try {
    await Deno.writeTextFile(
      `${dir}/a.json`,
      JSON.stringify([{
        instruction: "Give three tips for staying healthy.",
        input: "",
        output: RESPONSE,
      }]),
    );
    const section = resolveComponent(
      "dataset",
      {
        _component_: "torchtune.datasets.alpaca_dataset",
        source: "json",
        data_files: `${dir}/a.json`,
        train_on_input: false,
      },
      "dataset",
      { recipe: "test", prefix: "" } as never,
    );
    const ds = await instantiate<DatasetBuilder>(section).load(tok, { maxSeqLen: 256 });
    const ref = REF.alpaca_no_input;
    deepStrictEqual(Array.from(ds.samples[0].tokens), ref.tokens);
    deepStrictEqual(Array.from(ds.samples[0].labels), expectedLabels(ref.tokens, ref.mask!));
    strictEqual(tok.decode(Array.from(ds.samples[0].labels).filter((l) => l >= 0)), RESPONSE);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("`textCompletionSample()` with the Llama 2 tokenizer adds BOS and EOS", () => {
  const s = textCompletionSample(tok, "Hello world", { addEos: true, maxSeqLen: null });
  deepStrictEqual(Array.from(s.tokens), REF.text_completion.tokens);
  deepStrictEqual(Array.from(s.tokens), [1, 15043, 3186, 2]);
  deepStrictEqual(Array.from(s.labels), [15043, 3186, 2, IGNORE_INDEX]);
});
