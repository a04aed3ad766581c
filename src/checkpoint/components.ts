/**
 * `_component_` builders of src/checkpoint, registered with src/config/registry.ts under
 * torchtune's names (torchtune.training.FullModelHFCheckpointer, ...MetaCheckpointer, and
 * the older torchtune.utils.* spellings) and `tune.training.Llama2cCheckpointer`.
 * Imported (for its side effect) by src/components.ts.
 */
import { registerComponent } from "../config/registry.ts";
import type { ParamSchema } from "../config/schema.ts";
import {
  type Checkpointer,
  type CheckpointerOptions,
  expandCheckpointFiles,
  FullModelHFCheckpointer,
  FullModelMetaCheckpointer,
  type OutputFormat,
} from "./checkpointer.ts";
import { TuneError } from "../errors.ts";
import type { ModelType } from "./hf_config.ts";
import { Llama2cCheckpointer } from "./llama2c_checkpointer.ts";
import { Phi3MiniHFCheckpointer } from "./phi3_checkpointer.ts";

/** torchtune's checkpointer keys. */
export const CHECKPOINTER_PARAMS: ParamSchema = {
  checkpoint_dir: { type: "string", required: true, doc: "directory holding the input checkpoint" },
  checkpoint_files: {
    type: "any",
    default: null,
    doc: "weight files in checkpoint_dir: a list, or {filename_format, max_filename}; " +
      "default: the format's usual files",
  },
  output_dir: { type: "string", required: true, doc: "where epoch_N/ and recipe_state/ go" },
  model_type: {
    type: "string",
    required: true,
    choices: [
      "LLAMA2",
      "LLAMA3",
      "LLAMA3_2",
      "MISTRAL",
      "QWEN2",
      "PHI3_MINI",
      "PHI4",
      "QWEN3",
      "GEMMA",
      "GEMMA2",
      "LLAMA2C",
    ],
    doc: "model family (picks config.json architecture and Meta rope scaling)",
  },
  adapter_checkpoint: { type: "string", default: null, doc: "PEFT adapter to load (dir or file)" },
  recipe_checkpoint: { type: "string", default: null, doc: "recipe_state directory to resume" },
  resume_from_checkpoint: {
    type: "bool",
    default: false,
    doc: "load recipe state from <output_dir>/recipe_state",
  },
  keep_last_n_checkpoints: {
    type: "int",
    default: null,
    doc: "keep only the newest N epoch_/step_ folders of output_dir (older ones are removed " +
      "once a new one is complete); null keeps all",
  },
  output_format: {
    type: "string",
    default: "native",
    choices: ["native", "gguf"],
    doc: "gguf: also write model.gguf (llama.cpp, the weights' dtype, tokenizer from " +
      "checkpoint_dir) into every folder that holds a full model",
  },
  safe_serialization: {
    type: "bool",
    default: true,
    doc: "accepted; tune always writes safetensors",
  },
};

/** Parse validated checkpointer keys. */
export function checkpointerOptions(a: Record<string, unknown>): CheckpointerOptions {
  return {
    checkpointDir: a.checkpoint_dir as string,
    checkpointFiles: expandCheckpointFiles(a.checkpoint_files),
    outputDir: a.output_dir as string,
    modelType: a.model_type as ModelType,
    adapterCheckpoint: (a.adapter_checkpoint as string | null) ?? null,
    recipeCheckpoint: (a.recipe_checkpoint as string | null) ?? null,
    resumeFromCheckpoint: (a.resume_from_checkpoint as boolean) ?? false,
    keepLastNCheckpoints: keepLastN(a.keep_last_n_checkpoints),
    outputFormat: (a.output_format as OutputFormat | undefined) ?? "native",
  };
}

function keepLastN(v: unknown): number | null {
  if (v === null || v === undefined) return null;
  if (!Number.isInteger(v) || (v as number) < 1) {
    throw new TuneError(
      `checkpointer.keep_last_n_checkpoints must be a positive integer or null, got ${v}`,
    );
  }
  return v as number;
}

registerComponent<Checkpointer>({
  name: "torchtune.training.FullModelHFCheckpointer",
  aliases: ["torchtune.utils.FullModelHFCheckpointer"],
  kind: "checkpointer",
  doc: "Hugging Face safetensors + config.json (reads sharded checkpoints, keeps the shard layout)",
  params: CHECKPOINTER_PARAMS,
  build: (a) =>
    a.model_type === "PHI3_MINI" || a.model_type === "PHI4"
      ? new Phi3MiniHFCheckpointer(checkpointerOptions(a))
      : new FullModelHFCheckpointer(checkpointerOptions(a)),
});

registerComponent<Checkpointer>({
  name: "torchtune.training.FullModelMetaCheckpointer",
  aliases: ["torchtune.utils.FullModelMetaCheckpointer"],
  kind: "checkpointer",
  doc: "Meta consolidated.NN.pth + params.json (model-parallel shards merged)",
  params: CHECKPOINTER_PARAMS,
  build: (a) => new FullModelMetaCheckpointer(checkpointerOptions(a)),
});

registerComponent<Checkpointer>({
  name: "tune.training.Llama2cCheckpointer",
  kind: "checkpointer",
  doc: "llama2.c model.bin (Karpathy's export format)",
  params: CHECKPOINTER_PARAMS,
  build: (a) => new Llama2cCheckpointer(checkpointerOptions(a)),
});
