/**
 * Local JSON / JSONL / CSV / text loading, split slicing, bad-input errors, and the
 * registered dataset components built through the config resolver, as recipes build them.
 * Fixtures: tests/fixtures/data/*. Tolerance: exact.
 */
import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert";
import "../src/data/components.ts";
import { resolveComponent } from "../src/config/resolve.ts";
import { instantiate } from "../src/config/instantiate.ts";
import {
  alpacaPrompt,
  type DatasetBuilder,
  IGNORE_INDEX,
  loadDataset,
  loadRows,
  splitText,
} from "../src/data/mod.ts";
import { TuneError } from "../src/errors.ts";
import { ByteTokenizer } from "./data_byte_tokenizer_test.ts";

const FIX = new URL("./fixtures/data/", import.meta.url).pathname;
const tok = new ByteTokenizer();

/** Build a dataset component from a config section, exactly as a recipe does. */
function build(section: Record<string, unknown>): DatasetBuilder {
  const resolved = resolveComponent("dataset", section, "dataset", {
    recipe: "test",
    prefix: "",
  } as never);
  return instantiate<DatasetBuilder>(resolved);
}

/** Assert `fn` rejects with a one-line TuneError matching `re`. */
async function oneLineError(fn: () => Promise<unknown> | unknown, re: RegExp) {
  await rejects(async () => await fn(), (e: Error) => {
    ok(e instanceof TuneError, `TuneError expected, got ${e}`);
    ok(!e.message.includes("\n"), `one line expected: ${e.message}`);
    ok(re.test(e.message), `${e.message} !~ ${re}`);
    return true;
  });
}

Deno.test("`loadRows()` reads a JSON array and JSON Lines to the same rows", async () => {
  const a = await loadRows({ source: "json", dataFiles: `${FIX}alpaca_tiny.json` });
  const b = await loadRows({ source: "json", dataFiles: `${FIX}alpaca_tiny.jsonl` });
  deepStrictEqual(a.rows, b.rows);
  deepStrictEqual(a.rows[0], { instruction: "Add the numbers.", input: "2 3", output: "5" });
  strictEqual(a.rows.length, 3);
  strictEqual(a.label, `${FIX}alpaca_tiny.json`);
});

Deno.test("`loadRows()` reads quoted CSV fields with commas, newlines and quotes", async () => {
  const { rows } = await loadRows({ source: "csv", dataFiles: `${FIX}qa.csv` });
  deepStrictEqual(rows, [
    { question: "Capital of France, please?", answer: "Paris" },
    { question: "Two lines\nhere", answer: 'He said "yes"' },
  ]);
});

Deno.test("`loadRows()` splits text files into paragraphs at blank lines by default", async () => {
  const { rows } = await loadRows({ source: "text", dataFiles: `${FIX}text_tiny.txt` });
  deepStrictEqual(rows, [
    { text: "First paragraph,\nstill first." },
    { text: "Second paragraph." },
    { text: "Third one." },
  ]);
  const text = "a\nb\n\n\nc\r\n\r\nd\n";
  deepStrictEqual(splitText(text, "document"), ["a\nb\n\n\nc\n\nd"]);
  deepStrictEqual(splitText(text, "line"), ["a", "b", "c", "d"]);
});

Deno.test("`loadRows()` slices a split like Hugging Face (train[:2], train[-1:], train[:50%])", async () => {
  const src = { source: "json", dataFiles: `${FIX}alpaca_tiny.json` };
  const out = (await loadRows({ ...src, split: "train[:2]" })).rows.map((r) => r.output);
  deepStrictEqual(out, ["5", "Red"]);
  deepStrictEqual((await loadRows({ ...src, split: "train[-1:]" })).rows.map((r) => r.output), [
    "Hi!",
  ]);
  deepStrictEqual((await loadRows({ ...src, split: "train[:50%]" })).rows.length, 2); // round(1.5)
  await oneLineError(() => loadRows({ ...src, split: "validation" }), /form the split "train"/);
  await oneLineError(() => loadRows({ ...src, split: "train[:x]" }), /dataset.split "train\[:x\]"/);
});

Deno.test("`loadRows()` names the path when a data file is missing", async () => {
  await oneLineError(
    () => loadRows({ source: "json", dataFiles: "/no/such/dir/data.json" }),
    /^dataset file not found: \/no\/such\/dir\/data.json; check dataset.data_files$/,
  );
  await oneLineError(
    () => loadRows({ source: "json" }),
    /dataset.source=json needs dataset.data_files/,
  );
  await oneLineError(() => loadRows({ source: "not a source" }), /neither a file type/);
  await oneLineError(() => loadRows({ source: "" }), /dataset.source is not set/);
});

Deno.test("`loadRows()` names the file and line of bad JSON", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tune_data_" });
  try {
    await Deno.writeTextFile(`${dir}/bad.jsonl`, '{"a": 1}\n{"a": \n');
    await oneLineError(
      () => loadRows({ source: "json", dataFiles: `${dir}/bad.jsonl` }),
      new RegExp(`${dir}/bad.jsonl line 2: invalid JSON`),
    );
    await Deno.writeTextFile(`${dir}/obj.json`, '{"a": 1}');
    await oneLineError(
      () => loadRows({ source: "json", dataFiles: `${dir}/obj.json` }),
      /holds a JSON object, not an array of rows/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("`alpaca_dataset` loads local JSON and applies the Alpaca prompt, EOS and masking", async () => {
  const ds = await build({
    _component_: "torchtune.datasets.alpaca_dataset",
    data_files: `${FIX}alpaca_tiny.json`,
    train_on_input: false,
  }).load(tok, { maxSeqLen: 512 });
  strictEqual(ds.samples.length, 3);
  strictEqual(ds.numRows, 3);
  strictEqual(ds.packed, false);
  strictEqual(
    tok.render(ds.samples[0].tokens),
    `<s>${alpacaPrompt("Add the numbers.", "2 3")}5</s>`,
  );
  strictEqual(
    tok.render(ds.samples[1].tokens),
    `<s>${alpacaPrompt("Name a primary color.")}Red</s>`,
  );
  strictEqual(tok.render(ds.samples[2].tokens), `<s>${alpacaPrompt("Say hi.")}Hi!</s>`);
  // Trained targets of row 1: "Red" + EOS.
  const trained = Array.from(ds.samples[1].labels).filter((l) => l !== IGNORE_INDEX);
  strictEqual(tok.render(trained), "Red</s>");
});

Deno.test("`alpaca_dataset` names a missing column and lists the available ones", async () => {
  const b = build({
    _component_: "torchtune.datasets.alpaca_dataset",
    source: "json",
    data_files: `${FIX}alpaca_tiny.jsonl`,
    column_map: { output: "response" },
  });
  await oneLineError(
    () => b.load(tok),
    /^dataset row 0 of \S+alpaca_tiny.jsonl has no column "response"; available columns: instruction, input, output; set dataset.column_map.output to one of them$/,
  );
  throws(
    () => build({ _component_: "torchtune.datasets.alpaca_dataset", column_map: { answer: "x" } }),
    /column_map has unknown key answer; its keys are instruction, input, output/,
  );
});

Deno.test("`instruct_dataset` maps CSV columns with column_map and prepends a system prompt", async () => {
  const ds = await build({
    _component_: "torchtune.datasets.instruct_dataset",
    source: "csv",
    data_files: `${FIX}qa.csv`,
    column_map: { input: "question", output: "answer" },
    new_system_prompt: "Answer.",
    chat_format: "plain",
  }).load(tok);
  strictEqual(
    tok.render(ds.samples[0].tokens),
    "<s>system: Answer.\nuser: Capital of France, please?\nassistant: Paris</s>",
  );
  const trained = Array.from(ds.samples[0].labels).filter((l) => l !== IGNORE_INDEX);
  strictEqual(tok.render(trained), "Paris</s>");
});

Deno.test("`chat_dataset` reads ShareGPT and OpenAI conversations (no template: contents only, as torchtune)", async () => {
  const share = await build({
    _component_: "torchtune.datasets.chat_dataset",
    source: "json",
    data_files: `${FIX}chat_sharegpt.jsonl`,
    conversation_style: "sharegpt",
  }).load(tok);
  deepStrictEqual(share.samples.map((s) => tok.render(s.tokens)), [
    // torchtune's tokenize_messages_no_special_tokens with no prompt template: BOS per turn,
    // the message texts, EOS after each assistant message
    "<s>Be brief.HiHello.</s>",
    "<s>2+2?4</s><s>3+3?6</s>",
  ]);
  const trained = Array.from(share.samples[1].labels).filter((l) => l !== IGNORE_INDEX);
  strictEqual(tok.render(trained), "4</s>6</s>");
  const openai = await build({
    _component_: "torchtune.datasets.chat_dataset",
    source: "json",
    data_files: `${FIX}chat_openai.json`,
    conversation_style: "openai",
    template: "torchtune.models.llama2.Llama2ChatTemplate",
  }).load(tok);
  deepStrictEqual(openai.samples.map((s) => tok.render(s.tokens)), [
    "<s>[INST] Hi [/INST] Hello.</s>",
    "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n2+2? [/INST] 4</s>",
  ]);
  throws(
    () =>
      build({
        _component_: "torchtune.datasets.chat_dataset",
        source: "json",
        conversation_style: "openai",
        chat_format: "chatml",
        template: "llama2",
      }),
    /chat_format=chatml and dataset.template=llama2 disagree/,
  );
  await oneLineError(
    () =>
      build({
        _component_: "torchtune.datasets.chat_dataset",
        source: "json",
        data_files: `${FIX}chat_openai.json`,
        conversation_style: "sharegpt",
      }).load(tok),
    /has no column "conversations"; available columns: messages; set dataset.conversation_column/,
  );
});

Deno.test("`text_completion_dataset` packs a text file into max_seq_len packs", async () => {
  const ds = await build({
    _component_: "torchtune.datasets.text_completion_dataset",
    source: "text",
    data_files: `${FIX}text_tiny.txt`,
    packed: true,
  }).load(tok, { maxSeqLen: 32 });
  strictEqual(ds.numRows, 3);
  strictEqual(ds.samples.length, 2); // 31 + 19 + 12 = 62 tokens, split across packs of 32
  ok(ds.samples.every((s) => s.tokens.length === 32 && s.labels.length === 32));
  // All packs concatenated give back the three documents (BOS + text + EOS each), then padding.
  const flat = ds.samples.flatMap((s) => Array.from(s.tokens));
  strictEqual(
    tok.render(flat).replace(/(<pad>)+$/, ""),
    "<s>First paragraph,\nstill first.</s><s>Second paragraph.</s><s>Third one.</s>",
  );
  const col = await build({
    _component_: "torchtune.datasets.text_completion_dataset",
    source: "json",
    data_files: `${FIX}text_col.jsonl`,
    column: "body",
    add_eos: false,
  }).load(tok);
  deepStrictEqual(col.samples.map((s) => tok.render(s.tokens)), [
    "<s>alpha",
    "<s>beta",
  ]);
  await oneLineError(
    () =>
      build({
        _component_: "torchtune.datasets.text_completion_dataset",
        source: "json",
        data_files: `${FIX}text_col.jsonl`,
      }).load(tok),
    /has no column "text"; available columns: id, body; set dataset.column to one of them/,
  );
  await oneLineError(
    () =>
      build({
        _component_: "torchtune.datasets.text_completion_dataset",
        source: "text",
        data_files: `${FIX}text_tiny.txt`,
        packed: true,
      }).load(tok),
    /packed=True needs a max_seq_len/,
  );
});

Deno.test("`loadDataset()` concatenates a list of datasets and rejects mixed packing", async () => {
  const alpaca = build({
    _component_: "torchtune.datasets.alpaca_dataset",
    data_files: `${FIX}alpaca_tiny.json`,
  });
  const text = build({
    _component_: "torchtune.datasets.text_completion_dataset",
    source: "text",
    data_files: `${FIX}text_tiny.txt`,
  });
  const ds = await loadDataset([alpaca, text], tok, { maxSeqLen: 256 });
  strictEqual(ds.samples.length, 6);
  strictEqual(ds.numRows, 6);
  strictEqual(tok.render(ds.samples[3].tokens), "<s>First paragraph,\nstill first.</s>");
  const packedText = build({
    _component_: "torchtune.datasets.text_completion_dataset",
    source: "text",
    data_files: `${FIX}text_tiny.txt`,
    packed: true,
  });
  await oneLineError(
    () => loadDataset([alpaca, packedText], tok, { maxSeqLen: 64 }),
    /mixes packed and unpacked/,
  );
  // The tokenizer's max_seq_len applies when neither the dataset nor the recipe sets one.
  const short = Object.assign(new ByteTokenizer(), { maxSeqLen: 8 });
  const t = await loadDataset(alpaca, short);
  strictEqual(t.maxSeqLen, 8);
  ok(t.samples.every((s) => s.tokens.length === 8 && s.tokens[7] === short.eosId));
});
