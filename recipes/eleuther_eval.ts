/**
 * Multiple-choice benchmarks of EleutherAI's lm-evaluation-harness (torchtune's eleuther_eval
 * recipe), written out in TypeScript: arc_easy, arc_challenge, piqa, hellaswag and
 * truthfulqa_mc1 / truthfulqa_mc2.
 *
 *   deno task tune run eleuther_eval --config tiny/eleuther_eval
 *
 * Each document's choices are scored as log-likelihoods of " " + choice given the context
 * (src/eval/loglikelihood.ts); `acc` is the share of documents whose best choice is the
 * gold one, `acc_norm` the same with each log-likelihood divided by its choice's length in
 * characters, and truthfulqa_mc2's `acc` the true answers' share of the probability mass, as
 * the harness computes them. Documents come from the task's Hugging Face
 * dataset (downloaded once into the cache) or, with `task_data_files`, from local JSON/JSONL
 * files holding the same fields. Writes `<output_dir>/eval_results.json` and prints a table.
 */
import "../src/components.ts";
import { join } from "node:path";
import { atomicWrite } from "../src/checkpoint/atomic_write.ts";
import type { LaunchOptions } from "../src/config/recipe.ts";
import type { ParamSchema, ResolvedConfig } from "../src/config/schema.ts";
import { loadRows } from "../src/data/source.ts";
import type { Sample } from "../src/data/mod.ts";
import { TuneError } from "../src/errors.ts";
import {
  type ChoiceDoc,
  harnessTask,
  harnessTaskNames,
  type TaskMetrics,
} from "../src/eval/harness_tasks.ts";
import { encodePair, requestSample, scoreSamples } from "../src/eval/loglikelihood.ts";
import { buildEvalModel, evalModelParams, prepareEvalModel } from "../src/training/eval_model.ts";

/** Every top-level key this recipe reads (torchtune's names, plus task_data_files). */
export const params = {
  ...evalModelParams,
  tasks: {
    type: "string[]",
    required: true,
    doc: `harness tasks to run: ${harnessTaskNames().join(", ")}`,
  },
  task_data_files: {
    type: "any",
    default: null,
    doc: "{task: path} local JSON/JSONL documents instead of the task's Hugging Face dataset",
  },
  limit: { type: "int", default: null, doc: "score at most this many documents per task" },
  max_seq_length: { type: "int", default: 4096, doc: "longest request in tokens (left-cut)" },
  batch_size: { type: "int", default: 8, doc: "requests per forward pass" },
  enable_kv_cache: { type: "bool", default: true, doc: "accepted for torchtune configs" },
  quantizer: {
    type: "any",
    default: null,
    doc: "only null: torchao's post-training quantizers are not available here",
  },
  apply_chat_template: {
    type: "bool",
    default: false,
    doc: "only False: requests are scored as plain text, as the harness does by default",
  },
  resume_from_checkpoint: {
    type: "bool",
    default: false,
    doc: "only False (torchtune's evaluation configs carry it): evaluation has nothing to resume",
  },
  output_dir: { type: "string", default: "out/eleuther_eval", doc: "eval_results.json goes here" },
  compile: { type: "bool", default: false, doc: "accepted for torchtune configs; ignored" },
} satisfies ParamSchema;

/** This recipe has no top-level alias keys. */
export const keyAliases = {} as const;

/** The resolved config of this recipe. */
export type EleutherEvalConfig = ResolvedConfig<typeof params>;

/** One task's result: its metrics (acc, and acc_norm for "choice" tasks) and documents scored. */
export interface TaskResult {
  metrics: Record<string, number>;
  docs: number;
}

/**
 * The harness's metrics of documents given each choice's log-likelihood: acc (the best
 * choice is the gold one), acc_norm (the same with log-likelihoods divided by the choice's
 * length in characters), or for mc2 the true answers' share of the probability mass.
 */
export function taskMetrics(
  kind: TaskMetrics,
  docs: readonly ChoiceDoc[],
  logliks: readonly number[][],
): TaskResult {
  const argmax = (xs: number[]) => xs.reduce((best, x, i) => (x > xs[best] ? i : best), 0);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / docs.length;
  if (kind === "mc2") {
    const mass = logliks.map((ll, d) => {
      const p = ll.map(Math.exp);
      const t = docs[d].trueCount ?? 0;
      return p.slice(0, t).reduce((a, b) => a + b, 0) / p.reduce((a, b) => a + b, 0);
    });
    return { metrics: { acc: mean(mass) }, docs: docs.length };
  }
  const hit = (pick: (ll: number[], d: number) => number) =>
    mean(logliks.map((ll, d) => (pick(ll, d) === docs[d].gold ? 1 : 0)));
  const acc = hit((ll) => argmax(ll));
  if (kind === "mc1") return { metrics: { acc }, docs: docs.length };
  const accNorm = hit((ll, d) =>
    argmax(ll.map((x, c) => x / Math.max(1, docs[d].choices[c].length)))
  );
  return { metrics: { acc, acc_norm: accNorm }, docs: docs.length };
}

async function taskDocs(
  name: string,
  files: Record<string, string> | null,
  limit: number | null,
): Promise<ChoiceDoc[]> {
  const task = harnessTask(name);
  const local = files?.[name];
  const { rows, label } = local
    ? await loadRows({ source: "json", dataFiles: local })
    : await loadRows({ source: task.source, split: task.split, subset: task.subset ?? undefined });
  if (rows.length === 0) throw new TuneError(`task ${name}: ${label} has no documents`);
  const picked = limit === null ? rows : rows.slice(0, limit);
  return picked.map((r, i) => task.toDoc(r, i));
}

/** Run the evaluation in this process; returns each task's result. */
export async function runEleutherEval(
  cfg: EleutherEvalConfig,
  _launch: LaunchOptions,
  hooks: { quiet?: boolean } = {},
): Promise<Record<string, TaskResult>> {
  if (cfg.apply_chat_template) {
    throw new TuneError(
      "apply_chat_template=True is not supported: eleuther_eval scores requests as plain text; " +
        "set apply_chat_template=False",
    );
  }
  if (cfg.resume_from_checkpoint) {
    throw new TuneError(
      "resume_from_checkpoint=True has no meaning for eleuther_eval (it evaluates a checkpoint); " +
        "set it to False and point checkpointer.checkpoint_dir at the checkpoint",
    );
  }
  if (cfg.quantizer !== null) {
    throw new TuneError("quantizer is not supported here; set quantizer: null");
  }
  const files = cfg.task_data_files as Record<string, string> | null;
  if (files !== null && (typeof files !== "object" || Array.isArray(files))) {
    throw new TuneError("task_data_files must be a mapping {task: path}");
  }
  for (const t of cfg.tasks) harnessTask(t); // unknown names fail before any load
  const parts = await prepareEvalModel(cfg, hooks.quiet);
  const { tokenizer } = parts;
  const prefix = tokenizer.bosId >= 0 ? tokenizer.bosId : tokenizer.eosId;
  // Every request of every task first: the longest fixes the model's T.
  const tasks = [];
  for (const name of cfg.tasks) {
    const docs = await taskDocs(name, files, cfg.limit);
    const samples: Sample[] = [];
    for (const d of docs) {
      for (const c of d.choices) {
        const p = encodePair(tokenizer, d.context, " " + c);
        samples.push(requestSample(p.context, p.continuation, cfg.max_seq_length, prefix));
      }
    }
    tasks.push({ name, docs, samples });
  }
  const T = Math.max(...tasks.flatMap((t) => t.samples.map((s) => s.tokens.length)));
  const model = buildEvalModel(parts, cfg.batch_size, T, cfg.seed);
  const results: Record<string, TaskResult> = {};
  try {
    for (const t of tasks) {
      const ll = scoreSamples(model, t.samples, tokenizer.padId);
      let k = 0;
      const perDoc = t.docs.map((d) => d.choices.map(() => ll[k++]));
      results[t.name] = taskMetrics(harnessTask(t.name).metrics, t.docs, perDoc);
    }
  } finally {
    model.free();
  }
  Deno.mkdirSync(cfg.output_dir, { recursive: true });
  const summary = Object.fromEntries(
    Object.entries(results).map(([k, r]) => [k, { ...r.metrics, docs: r.docs }]),
  );
  atomicWrite(join(cfg.output_dir, "eval_results.json"), JSON.stringify(summary, null, 2) + "\n");
  if (!hooks.quiet) {
    console.log("| task | docs | metric | value |\n| --- | ---: | --- | ---: |");
    for (const [k, r] of Object.entries(results)) {
      for (const [m, v] of Object.entries(r.metrics)) {
        console.log(`| ${k} | ${r.docs} | ${m} | ${v.toFixed(4)} |`);
      }
    }
  }
  return results;
}

/** Run the recipe. */
export async function main(cfg: EleutherEvalConfig, launch: LaunchOptions): Promise<void> {
  await runEleutherEval(cfg, launch);
}
