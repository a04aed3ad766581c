/**
 * torchtune's named dataset builders (samsum, grammar, slimorca, wikitext, cnn_dailymail) on
 * local files with their default columns, checked token by token with the byte tokenizer
 * (BOS 1, EOS 2, byte b -> b + 3). Tolerance: exact.
 */
import { deepStrictEqual, equal } from "node:assert";
import "../src/components.ts";
import { instantiate } from "../src/config/instantiate.ts";
import { resolveComponent } from "../src/config/resolve.ts";
import { type DatasetBuilder, IGNORE_INDEX as X } from "../src/data/mod.ts";
import { parsePromptTemplate } from "../src/data/prompt_template.ts";
import type { Tokenizer } from "../src/tokenizers/types.ts";
import { ByteTokenizer } from "./data_byte_tokenizer_test.ts";

const bytes = (s: string) => [...new TextEncoder().encode(s)].map((b) => b + 3);

async function load(component: string, rows: unknown[], tok: Tokenizer, extra = {}) {
  const path = Deno.makeTempFileSync({ suffix: ".jsonl" });
  try {
    Deno.writeTextFileSync(path, rows.map((r) => JSON.stringify(r)).join("\n") + "\n");
    const section = resolveComponent(
      "dataset",
      {
        _component_: component,
        data_files: path,
        ...extra,
      },
      "dataset",
      { recipe: "test", prefix: "" },
    );
    return { section, ds: await instantiate<DatasetBuilder>(section).load(tok) };
  } finally {
    Deno.removeSync(path);
  }
}

Deno.test("samsum_dataset reads dialogue -> summary; with SummarizeTemplate the prompt is torchtune's", async () => {
  const tok = new ByteTokenizer() as ByteTokenizer & { promptTemplate: unknown };
  tok.promptTemplate = parsePromptTemplate("torchtune.data.SummarizeTemplate", "t");
  const { section, ds } = await load(
    "torchtune.datasets.samsum_dataset",
    [{ dialogue: "A: hi", summary: "greet" }],
    tok as unknown as Tokenizer,
    { chat_format: "none" },
  );
  equal(section.source, "Samsung/samsum");
  const prompt = [
    ...bytes("Summarize this dialogue:\n"),
    ...bytes("A: hi"),
    ...bytes("\n---\nSummary:\n"),
  ];
  const s = ds.samples[0];
  deepStrictEqual(Array.from(s.tokens), [1, ...prompt, ...bytes("greet"), 2]);
  // the prompt is masked: the first trained target is the summary's first byte
  deepStrictEqual(Array.from(s.labels).slice(0, prompt.length + 1), [
    ...prompt.map(() => X),
    bytes("g")[0],
  ]);
});

Deno.test("grammar_dataset and slimorca_dataset read their default columns", async () => {
  const tok = new ByteTokenizer();
  const g = await load("torchtune.datasets.grammar_dataset", [{ input: "a", output: "b" }], tok, {
    chat_format: "none",
  });
  equal(g.section.source, "liweili/c4_200m");
  deepStrictEqual(Array.from(g.ds.samples[0].tokens), [1, ...bytes("a"), ...bytes("b"), 2]);
  const conv = [{ from: "human", value: "q" }, { from: "gpt", value: "r" }];
  const o = await load("torchtune.datasets.slimorca_dataset", [{ conversations: conv }], tok, {
    chat_format: "none",
  });
  equal(o.section.source, "Open-Orca/SlimOrca-Dedup");
  deepStrictEqual(Array.from(o.ds.samples[0].tokens), [1, ...bytes("q"), ...bytes("r"), 2]);
});

Deno.test("wikitext_dataset and cnn_dailymail_articles_dataset are text completion on page / article with their subsets", async () => {
  const tok = new ByteTokenizer();
  const w = await load("torchtune.datasets.wikitext_dataset", [{ page: "wiki" }], tok);
  deepStrictEqual([w.section.source, w.section.subset, w.section.column], [
    "EleutherAI/wikitext_document_level",
    "wikitext-103-v1",
    "page",
  ]);
  deepStrictEqual(Array.from(w.ds.samples[0].tokens), [1, ...bytes("wiki"), 2]);
  const c = await load(
    "torchtune.datasets.cnn_dailymail_articles_dataset",
    [{ article: "news" }],
    tok,
  );
  deepStrictEqual([c.section.source, c.section.subset], ["ccdv/cnn_dailymail", "3.0.0"]);
  deepStrictEqual(Array.from(c.ds.samples[0].tokens), [1, ...bytes("news"), 2]);
});
