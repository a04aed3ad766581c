/**
 * Preference data (torchtune's PreferenceDataset and its message transforms), checked token
 * by token with the byte tokenizer (BOS 1, EOS 2, byte b -> b + 3; 'a' = 100), and the
 * (2P, T) batches of setupPreferenceData: chosen rows first, then rejected, same order.
 * Tolerance: exact.
 */
import { deepStrictEqual, equal, match, rejects, throws } from "node:assert";
import "../src/components.ts";
import { resolveComponent } from "../src/config/resolve.ts";
import { IGNORE_INDEX as X } from "../src/data/mod.ts";
import { preferenceDataset, rowToPreferenceMessages } from "../src/data/preference.ts";
import { TuneError } from "../src/errors.ts";
import { setupPreferenceData } from "../src/training/preference_data.ts";
import { ByteTokenizer } from "./data_byte_tokenizer_test.ts";

const tok = new ByteTokenizer();
const arr = (a: Int32Array) => Array.from(a);
const ctx = { source: "t", index: 0 };
const WHERE = { recipe: "test", prefix: "" };

function withJsonl(rows: unknown[], fn: (path: string) => Promise<void>): Promise<void> {
  const path = Deno.makeTempFileSync({ suffix: ".jsonl" });
  Deno.writeTextFileSync(path, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
  return fn(path).finally(() => Deno.removeSync(path));
}

/** A resolved `dataset` section reading JSON Lines pairs with no chat format. */
function jsonPairsSection(path: string) {
  return resolveComponent(
    "preference_dataset",
    {
      _component_: "torchtune.datasets.preference_dataset",
      source: "json",
      data_files: path,
      chat_format: "none",
    },
    "dataset",
    WHERE,
  );
}

const conv = (q: string, a: string) => [
  { role: "user", content: q },
  { role: "assistant", content: a },
];

Deno.test("`preferenceDataset()` masks the prompt of both conversations and trains on each answer", async () => {
  await withJsonl([{ chosen: conv("ab", "c"), rejected: conv("ab", "de") }], async (path) => {
    const ds = await preferenceDataset({
      name: "t",
      source: "json",
      dataFiles: path,
      layout: "chosen_rejected",
      trainOnInput: false,
      chatFormat: "none",
    }).load(tok);
    equal(ds.pairs.length, 1);
    const { chosen, rejected } = ds.pairs[0];
    deepStrictEqual(arr(chosen.tokens), [1, 100, 101, 102, 2]);
    // BOS->a, a->b are prompt targets (masked); b->c and c->EOS are trained
    deepStrictEqual(arr(chosen.labels), [X, X, 102, 2, X]);
    deepStrictEqual(arr(rejected.tokens), [1, 100, 101, 103, 104, 2]);
    deepStrictEqual(arr(rejected.labels), [X, X, 103, 104, 2, X]);
  });
});

Deno.test("`rowToPreferenceMessages()` reads stack-exchange style string columns through column_map", () => {
  const cfg = {
    name: "t",
    source: "json",
    layout: "prompt_chosen_rejected" as const,
    columns: { prompt: "question", chosen: "response_j", rejected: "response_k" },
    trainOnInput: true,
    newSystemPrompt: "s",
  };
  const m = rowToPreferenceMessages(
    { question: "q", response_j: "good", response_k: "bad" },
    ctx,
    cfg,
  );
  deepStrictEqual(m.chosen.map((x) => [x.role, x.content.join(""), x.masked]), [
    ["system", "s", true],
    ["user", "q", false],
    ["assistant", "good", false],
  ]);
  deepStrictEqual(m.rejected.map((x) => x.content.join("")), ["s", "q", "bad"]);
  throws(
    () => rowToPreferenceMessages({ question: "q", response_j: "good" }, ctx, cfg),
    (e) =>
      e instanceof TuneError &&
      /has no column "response_k"; available columns: question, response_j; set dataset\.column_map\.rejected/
        .test(e.message),
  );
});

Deno.test("`rowToPreferenceMessages()` rejects a chosen column that is not a message list, in one line", () => {
  throws(
    () =>
      rowToPreferenceMessages({ chosen: "text", rejected: [] }, ctx, {
        name: "t",
        source: "json",
        layout: "chosen_rejected",
        trainOnInput: false,
      }),
    (e) =>
      e instanceof TuneError && !e.message.includes("\n") &&
      /column "chosen" must be a list of \{role, content\} messages/.test(e.message),
  );
});

Deno.test("`setupPreferenceData()` batches P pairs as (2P, T): chosen rows, then rejected rows", async () => {
  const rows = ["a", "b", "c"].map((q, i) => ({
    chosen: conv(q, "y".repeat(i + 1)),
    rejected: conv(q, "n"),
  }));
  await withJsonl(rows, async (path) => {
    const section = jsonPairsSection(path);
    const data = await setupPreferenceData(section, tok, {
      batchSize: 2,
      seed: 0,
      shuffle: false,
      modelMaxSeqLen: 64,
    });
    // longest sample: BOS a y y y EOS = 6 tokens
    equal(data.seqLen, 6);
    equal(data.sampler.stepsPerEpoch, 1);
    const b = data.batch(0, 0);
    equal(b.batchSize, 4);
    const row = (r: number) => arr(b.tokens.subarray(r * 6, (r + 1) * 6));
    deepStrictEqual(row(0), [1, 100, 124, 2, 0, 0]); // chosen of pair 0, right-padded
    deepStrictEqual(row(1), [1, 101, 124, 124, 2, 0]); // chosen of pair 1
    deepStrictEqual(row(2), [1, 100, 113, 2, 0, 0]); // rejected of pair 0
    deepStrictEqual(row(3), [1, 101, 113, 2, 0, 0]); // rejected of pair 1
    deepStrictEqual(arr(b.labels.subarray(18, 24)), [X, 113, 2, X, X, X]);
  });
});

Deno.test("`setupPreferenceData()` names the fix when samples exceed the model's max_seq_len", async () => {
  await withJsonl(
    [{ chosen: conv("abcdef", "g"), rejected: conv("abcdef", "h") }],
    async (path) => {
      const section = jsonPairsSection(path);
      await rejects(
        setupPreferenceData(section, tok, {
          batchSize: 1,
          seed: 0,
          shuffle: false,
          modelMaxSeqLen: 4,
        }),
        (e) => e instanceof TuneError && /set tokenizer\.max_seq_len=4/.test(e.message),
      );
    },
  );
});

Deno.test("stack_exchange_paired_dataset builds with torchtune's column names and data_dir", () => {
  const section = resolveComponent(
    "preference_dataset",
    {
      _component_: "torchtune.datasets.stack_exchange_paired_dataset",
    },
    "dataset",
    WHERE,
  );
  match(JSON.stringify(section), /response_j/);
  match(JSON.stringify(section), /data\/rl/);
});
