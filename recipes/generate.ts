/**
 * Text generation from a model checkpoint (torchtune's generate).
 *
 *   deno task tune run generate --config llama2c/generate prompt="Once upon a time"
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
  device: { type: "string", default: "cpu", choices: ["cpu", "cuda"], doc: "where to run" },
  dtype: { type: "string", default: "fp32", choices: ["fp32", "bf16"], doc: "compute dtype" },
  seed: { type: "int", default: null, doc: "random seed for sampling (null: pick one)" },
  prompt: {
    type: "any",
    required: true,
    doc: "the prompt: a string, or torchtune's {system, user} mapping",
  },
  chat_format: {
    type: "string",
    default: null,
    doc: "chat format to wrap the prompt in (null: raw text)",
  },
  instruct_template: {
    type: "string",
    default: null,
    doc: "instruction template to wrap the prompt in, e.g. alpaca (null: raw text)",
  },
  max_new_tokens: { type: "int", default: 300, doc: "stop after this many new tokens" },
  temperature: { type: "float", default: 0.6, doc: "sampling temperature (0: greedy)" },
  top_k: { type: "int", default: 300, doc: "sample from the k most likely tokens (null: all)" },
  top_p: { type: "float", default: null, doc: "nucleus sampling threshold (null: off)" },
  stop_tokens: {
    type: "int[]",
    default: null,
    doc: "token ids that also end generation (the tokenizer's EOS always does)",
  },
  enable_kv_cache: { type: "bool", default: true, doc: "cache keys and values while decoding" },
  compile: {
    type: "bool",
    default: false,
    doc: "accepted for torchtune configs; ignored (no torch.compile here)",
  },
  output_dir: {
    type: "string",
    default: null,
    doc: "accepted for torchtune configs; unused by generation",
  },
} satisfies ParamSchema;

/** This recipe has no top-level alias keys. */
export const keyAliases = {} as const;

/** Run the recipe. */
export function main(_cfg: ResolvedConfig<typeof params>, _launch: LaunchOptions): Promise<void> {
  throw new TuneError("recipe generate is not implemented yet");
}
