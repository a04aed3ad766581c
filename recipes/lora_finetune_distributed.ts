/**
 * LoRA fine-tuning sharded over several processes (torchtune's lora_finetune_distributed).
 *
 *   deno task tune run --nproc_per_node 2 lora_finetune_distributed --config tiny/lora_distributed
 */
import { TuneError } from "../src/errors.ts";
import type { LaunchOptions } from "../src/config/recipe.ts";
import type { ParamSchema, ResolvedConfig } from "../src/config/schema.ts";

/** Every top-level key this recipe reads (torchtune's names). */
export const params = {
  model: {
    type: "component",
    kind: "model",
    required: true,
    doc: "model builder (a lora_* builder)",
  },
  tokenizer: { type: "component", kind: "tokenizer", required: true, doc: "tokenizer builder" },
  checkpointer: {
    type: "component",
    kind: "checkpointer",
    required: true,
    doc: "reads the base weights and writes fine-tuned checkpoints",
  },
  resume_from_checkpoint: {
    type: "bool",
    default: false,
    doc: "resume training from the checkpointer's recipe state",
  },
  save_adapter_weights_only: {
    type: "bool",
    default: false,
    doc: "save only the LoRA adapter weights, not the merged model",
  },
  dataset: { type: "component", kind: "dataset", required: true, doc: "training dataset builder" },
  seed: { type: "int", default: null, doc: "random seed (null: pick one and log it)" },
  shuffle: { type: "bool", default: true, doc: "shuffle the dataset each epoch" },
  batch_size: { type: "int", default: 2, doc: "examples per micro-batch" },
  epochs: { type: "int", default: 1, doc: "passes over the dataset" },
  max_steps_per_epoch: { type: "int", default: null, doc: "stop each epoch after this many steps" },
  gradient_accumulation_steps: {
    type: "int",
    default: 1,
    doc: "micro-batches per optimizer step",
  },
  optimizer: { type: "component", kind: "optimizer", required: true, doc: "optimizer builder" },
  lr_scheduler: {
    type: "component",
    kind: "lr_scheduler",
    default: null,
    doc: "learning-rate schedule (null: constant)",
  },
  loss: { type: "component", kind: "loss", default: null, doc: "loss (null: cross-entropy)" },
  clip_grad_norm: { type: "float", default: null, doc: "clip the gradient norm to this value" },
  enable_activation_checkpointing: {
    type: "bool",
    default: true,
    doc: "recompute activations in backward to save memory",
  },
  enable_activation_offloading: {
    type: "bool",
    default: false,
    doc: "accepted for torchtune configs; ignored (memory-only option)",
  },
  fsdp_cpu_offload: {
    type: "bool",
    default: false,
    doc: "accepted for torchtune configs; ignored (memory-only option)",
  },
  custom_sharded_layers: {
    type: "string[]",
    default: null,
    doc: "accepted for torchtune configs; ignored (every layer is sharded)",
  },
  device: {
    type: "string",
    default: "cpu",
    choices: ["cpu", "cuda"],
    doc: "where to train (one process per device)",
  },
  dtype: { type: "string", default: "fp32", choices: ["fp32", "bf16"], doc: "compute dtype" },
  output_dir: {
    type: "string",
    default: "out/lora_finetune_distributed",
    doc: "checkpoints and logs go here",
  },
  metric_logger: {
    type: "component",
    kind: "metric_logger",
    default: null,
    doc: "where metrics go (null: stdout)",
  },
  log_every_n_steps: { type: "int", default: 1, doc: "log metrics every n optimizer steps" },
  log_peak_memory_stats: {
    type: "bool",
    default: false,
    doc: "log peak device memory with the metrics",
  },
  save_every_n_steps: {
    type: "int",
    default: null,
    doc: "also save a checkpoint every n optimizer steps (null: at each epoch end only)",
  },
  compile: {
    type: "bool",
    default: false,
    doc: "accepted for torchtune configs; ignored (no torch.compile here)",
  },
  profiler: { type: "any", default: null, doc: "accepted for torchtune configs; ignored" },
} satisfies ParamSchema;

/**
 * Top-level keys of early torchtune overrides (`lora_rank=4`) and the model keys they set.
 */
export const keyAliases = {
  lora_attn_modules: "model.lora_attn_modules",
  lora_rank: "model.lora_rank",
  lora_alpha: "model.lora_alpha",
} as const;

/** Run the recipe. */
export function main(_cfg: ResolvedConfig<typeof params>, _launch: LaunchOptions): Promise<void> {
  throw new TuneError("recipe lora_finetune_distributed is not implemented yet");
}
