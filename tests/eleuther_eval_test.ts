/**
 * lm-evaluation-harness tasks against a Python reference (tests/reference/harness_reference.py:
 * the harness's document processing and `_encode_pair` in Python, SentencePiece through its
 * Python library, log-likelihoods from the PyTorch Llama one unpadded row at a time):
 * contexts and choices exactly, log-likelihoods atol 1e-4 (batched and padded here),
 * acc / acc_norm exactly; the recipe end to end on tiny/eleuther_eval.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { loadRows } from "../src/data/source.ts";
import { type ChoiceDoc, harnessTask, hellaswagPreprocess } from "../src/eval/harness_tasks.ts";
import { encodePair, requestSample, scoreSamples } from "../src/eval/loglikelihood.ts";
import { createLlama } from "../src/models/llama/model.ts";
import { loadTokenizer } from "../src/tokenizers/load.ts";
import { taskMetrics } from "../recipes/eleuther_eval.ts";
import { assertClose, loadFixture } from "./fixture_io.ts";
import { fixtureConfig, prefixedStateDict } from "./_model_helpers.ts";
import { runOk, withTmp } from "./_recipe_helpers.ts";

const TINY = new URL("./fixtures/tiny/", import.meta.url).pathname;

interface TaskRef {
  docs: ChoiceDoc[];
  logliks: number[][];
  metrics: Record<string, number>;
}

const FILES: Record<string, string> = {
  arc_easy: "arc_easy.jsonl",
  hellaswag: "hellaswag.jsonl",
  truthfulqa_mc1: "truthfulqa_mc.jsonl",
  truthfulqa_mc2: "truthfulqa_mc.jsonl",
};

Deno.test("hellaswagPreprocess() turns WikiHow artifacts into text as the harness does", () => {
  assert.equal(
    hellaswagPreprocess(" [header] How to plant [title] Dig.  Then [title] wait. "),
    " How to plant. Dig. Then. wait.", // the harness's Python gives the same (strip comes first)
  );
});

Deno.test("arc_easy, hellaswag and truthfulqa_mc1/mc2 documents, log-likelihoods and metrics match the Python reference", async () => {
  const fx = loadFixture("harness_reference");
  const tasks = fx.meta<Record<string, TaskRef>>("tasks");
  const be = new CpuBackend();
  const tok = loadTokenizer(
    new URL("./fixtures/tokenizer_sp_small.model", import.meta.url).pathname,
  );
  const cfg = { ...fixtureConfig(fx), maxSeqLen: 2048 };
  for (const [name, ref] of Object.entries(tasks)) {
    const { rows } = await loadRows({ source: "json", dataFiles: join(TINY, FILES[name]) });
    const docs = rows.map((r, i) => harnessTask(name).toDoc(r, i));
    assert.deepEqual(docs, ref.docs, `${name}: documents`);
    const samples = docs.flatMap((d) =>
      d.choices.map((c) => {
        const p = encodePair(tok, d.context, " " + c);
        return requestSample(p.context, p.continuation, 2048, tok.bosId);
      })
    );
    const T = Math.max(...samples.map((s) => s.tokens.length));
    const model = createLlama(be, { name: "tiny", config: cfg, lora: null }, {
      batch: 5, // not a divisor of the request count: the last batch is padded
      seqLen: T,
      training: false,
    });
    model.loadStateDict(prefixedStateDict(fx, "w."));
    const ll = scoreSamples(model, samples, tok.padId);
    model.free();
    assertClose(`${name} log-likelihoods`, ll, ref.logliks.flat(), { atol: 1e-4, rtol: 0 });
    let k = 0;
    const m = taskMetrics(
      harnessTask(name).metrics,
      docs,
      docs.map((d) => d.choices.map(() => ll[k++])),
    );
    assert.deepEqual(Object.keys(m.metrics), Object.keys(ref.metrics), `${name}: metric names`);
    for (const [metric, v] of Object.entries(ref.metrics)) {
      // acc / acc_norm are shares of documents (exact); mc2's mass moves with the log-likelihoods
      assertClose(`${name} ${metric}`, [m.metrics[metric]], [v], { atol: 1e-4, rtol: 0 });
    }
    console.log(`${name}: ${JSON.stringify(m.metrics)}`);
  }
});

Deno.test("eleuther_eval runs tiny/eleuther_eval and writes eval_results.json", async () => {
  await withTmp(async (dir) => {
    const r = await runOk(
      "eleuther_eval",
      "--config",
      "tiny/eleuther_eval",
      `output_dir=${dir}`,
      "limit=3",
    );
    const res = JSON.parse(Deno.readTextFileSync(join(dir, "eval_results.json")));
    assert.deepEqual(Object.keys(res), ["arc_easy", "hellaswag"]);
    for (const v of Object.values(res) as { acc: number; acc_norm: number; docs: number }[]) {
      assert.equal(v.docs, 3);
      assert.ok(v.acc >= 0 && v.acc <= 1 && v.acc_norm >= 0 && v.acc_norm <= 1);
    }
    assert.match(r.stdout, /\| arc_easy \| 3 \| acc \| /);
  });
});

Deno.test("eleuther_eval names an unsupported task in one line", async () => {
  const { tune } = await import("./_recipe_helpers.ts");
  const r = await tune(
    "run",
    "eleuther_eval",
    "--config",
    "tiny/eleuther_eval",
    "tasks=[winogrande]",
  );
  assert.notEqual(r.code, 0);
  assert.match(
    r.stderr.trim().split("\n").pop()!,
    /^tune: task winogrande is not supported; tasks: arc_easy, arc_challenge, truthfulqa_mc1, truthfulqa_mc2, piqa, hellaswag$/,
  );
});
