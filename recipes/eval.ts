/**
 * Evaluation: mean loss and perplexity of a model on a dataset.
 *
 *   deno task tune run eval --config tiny/eval
 */
import { TuneError } from "../src/errors.ts";
import type { LaunchOptions } from "../src/config/recipe.ts";
import type { ParamSchema, ResolvedConfig } from "../src/config/schema.ts";

/** Every top-level key this recipe reads (torchtune's names). */
export const params = {
  model: { type: "component", kind: "model", required: true, doc: "model builder" },
  tokenizer: { type: "component", kind: "tokenizer", required: true, doc: "tokenizer builder" },
  checkpointer: {
    type: "component",
    kind: "checkpointer",
    required: true,
    doc: "reads the model weights",
  },
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
  seed: { type: "int", default: null, doc: "random seed (null: pick one)" },
  device: { type: "string", default: "cpu", choices: ["cpu", "cuda"], doc: "where to run" },
  dtype: { type: "string", default: "fp32", choices: ["fp32", "bf16"], doc: "compute dtype" },
  output_dir: { type: "string", default: "out/eval", doc: "metrics go here" },
  metric_logger: {
    type: "component",
    kind: "metric_logger",
    default: null,
    doc: "where metrics go (null: stdout)",
  },
  compile: {
    type: "bool",
    default: false,
    doc: "accepted for torchtune configs; ignored (no torch.compile here)",
  },
} satisfies ParamSchema;

/** This recipe has no top-level alias keys. */
export const keyAliases = {} as const;

/** Run the recipe. */
export function main(_cfg: ResolvedConfig<typeof params>, _launch: LaunchOptions): Promise<void> {
  throw new TuneError("recipe eval is not implemented yet");
}
