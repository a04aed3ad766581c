/**
 * Evaluation: mean loss and perplexity of a model, with or without a LoRA adapter, on a
 * dataset.
 *
 *   deno task tune run eval --config tiny/eval
 *
 * Every sample of the dataset is scored once, in order (the last batch is padded with
 * empty rows rather than dropped). The loss is the mean over all counted tokens (not a mean
 * of batch means), and perplexity = exp(loss). Writes `<output_dir>/eval_results.json` and
 * prints one line. With an adapter: a `lora_*` model builder plus
 * `checkpointer.adapter_checkpoint` (a directory holding adapter_model.safetensors, e.g. a
 * fine-tuning run's epoch_<N>).
 *
 * In-process use: `await runEval(cfg, launch, { quiet })`.
 */
import "../src/components.ts";
import { join } from "node:path";
import { atomicWrite } from "../src/checkpoint/atomic_write.ts";
import { instantiate } from "../src/config/instantiate.ts";
import type { LaunchOptions } from "../src/config/recipe.ts";
import type { ParamSchema, ResolvedConfig } from "../src/config/schema.ts";
import type { DatasetBuilder } from "../src/data/mod.ts";
import { TuneError } from "../src/errors.ts";
import type { MetricLogger } from "../src/training/metric_logging.ts";
import { ProgressBar } from "../src/training/progress.ts";
import { packingOf } from "../src/training/data.ts";
import { scoringBatches } from "../src/training/validation.ts";
import { buildEvalModel, evalModelParams, prepareEvalModel } from "../src/training/eval_model.ts";

/** Every top-level key this recipe reads (torchtune's names). */
export const params = {
  ...evalModelParams,
  dataset: {
    type: "component",
    kind: "dataset",
    required: true,
    doc: "evaluation dataset builder",
  },
  batch_size: { type: "int", default: 8, doc: "examples per batch" },
  max_steps: {
    type: "int",
    default: null,
    doc: "stop after this many batches (null: whole dataset)",
  },
  output_dir: { type: "string", default: "out/eval", doc: "eval_results.json goes here" },
  metric_logger: {
    type: "component",
    kind: "metric_logger",
    default: null,
    doc: "where the result also goes (null: only eval_results.json and stdout)",
  },
  compile: {
    type: "bool",
    default: false,
    doc: "accepted for torchtune configs; ignored (no torch.compile here)",
  },
} satisfies ParamSchema;

/** This recipe has no top-level alias keys. */
export const keyAliases = {} as const;

/** The resolved config of this recipe. */
export type EvalConfig = ResolvedConfig<typeof params>;

/** What an evaluation measured. */
export interface EvalResult {
  /** Mean cross-entropy over all counted tokens (nats). */
  loss: number;
  /** exp(loss). */
  perplexity: number;
  /** Tokens counted (labels that are not -100). */
  tokens: number;
  /** Samples scored. */
  samples: number;
  /** `<output_dir>/eval_results.json`. */
  resultsPath: string;
}

/** Run the evaluation in this process. */
export async function runEval(
  cfg: EvalConfig,
  _launch: LaunchOptions,
  hooks: { quiet?: boolean } = {},
): Promise<EvalResult> {
  // ---- setup ----
  const parts = await prepareEvalModel(cfg, hooks.quiet);
  const { tokenizer } = parts;
  // Data: every sample, in order, padded to the longest one.
  const ds = await instantiate<DatasetBuilder>(cfg.dataset).load(tokenizer, {
    maxSeqLen: tokenizer.maxSeqLen ?? null,
  });
  if (ds.samples.length === 0) {
    throw new TuneError(`dataset ${ds.source} has no samples; check dataset.data_files`);
  }
  const T = Math.max(...ds.samples.map((s) => s.tokens.length));
  const B = Math.min(cfg.batch_size, ds.samples.length);
  // Model: allocated for (B, T), then its weights.
  const model = buildEvalModel(parts, B, T, cfg.seed);
  const logger = cfg.metric_logger ? instantiate<MetricLogger>(cfg.metric_logger) : null;

  // ---- evaluate ----
  const nBatches = Math.ceil(ds.samples.length / B);
  const steps = cfg.max_steps === null ? nBatches : Math.min(nBatches, cfg.max_steps);
  const bar = hooks.quiet ? null : new ProgressBar("eval", steps);
  let lossSum = 0, tokens = 0, samples = 0, i = 0;
  for (const { batch, samples: n } of scoringBatches(ds, B, T, 0, 1, cfg.max_steps)) {
    samples += n;
    const r = model.loss(batch.tokens, batch.labels, packingOf(batch));
    lossSum += r.lossSum;
    tokens += r.tokens;
    bar?.update(++i, { loss: (lossSum / Math.max(1, tokens)).toFixed(4) });
  }
  bar?.finish();
  model.free();
  if (tokens === 0) throw new TuneError(`dataset ${ds.source} has no tokens to score`);
  const loss = lossSum / tokens;
  const perplexity = Math.exp(loss);
  Deno.mkdirSync(cfg.output_dir, { recursive: true });
  const resultsPath = join(cfg.output_dir, "eval_results.json");
  atomicWrite(
    resultsPath,
    JSON.stringify({ loss, perplexity, tokens, samples, dataset: ds.source }, null, 2) + "\n",
  );
  logger?.logDict({ loss, perplexity, tokens }, 0);
  logger?.close();
  if (!hooks.quiet) {
    console.log(
      `eval: loss ${loss.toFixed(4)} perplexity ${perplexity.toFixed(3)} ` +
        `over ${tokens} tokens (${samples} samples of ${ds.source})`,
    );
  }
  return { loss, perplexity, tokens, samples, resultsPath };
}

/** Run the recipe. */
export async function main(cfg: EvalConfig, launch: LaunchOptions): Promise<void> {
  await runEval(cfg, launch);
}
