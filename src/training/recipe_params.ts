/**
 * The keys every fine-tuning recipe shares (torchtune's names), declared once: the
 * recipes' `params` spread them and add their own (the model builder, LoRA's
 * save_adapter_weights_only, DPO's preference data, the distillation keys, ...).
 * A `_single_device` and a `_distributed` entry of one recipe differ only in the
 * defaults and docs `singleDeviceParams` / `distributedParams` give them.
 */
import type { ComponentSection, ParamSchema, ResolvedConfig } from "../config/schema.ts";

/** What every fine-tuning recipe reads (the model builder and output_dir come per recipe). */
export const finetuneParams = {
  tokenizer: { type: "component", kind: "tokenizer", required: true, doc: "tokenizer builder" },
  checkpointer: {
    type: "component",
    kind: "checkpointer",
    required: true,
    doc: "reads the base weights and writes fine-tuned checkpoints",
  },
  model_init: {
    type: "string",
    default: "checkpoint",
    choices: ["checkpoint", "random"],
    doc: "checkpoint: base weights from the checkpointer; random: seeded fresh weights " +
      "(tiny test models; the checkpointer then only writes)",
  },
  resume_from_checkpoint: {
    type: "bool",
    default: false,
    doc: "resume training from the checkpointer's recipe state",
  },
  allow_changed_batch: {
    type: "bool",
    default: false,
    doc: "resume even when the global batch (batch_size x world size) or " +
      "gradient_accumulation_steps differ from the saved run's (the lr schedule and data " +
      "position then only approximate it; a warning says so)",
  },
  dataset: { type: "component", kind: "dataset", required: true, doc: "training dataset builder" },
  seed: { type: "int", default: null, doc: "random seed (null: pick one and log it)" },
  shuffle: { type: "bool", default: true, doc: "shuffle the dataset each epoch" },
  batch_size: { type: "int", default: 2, doc: "examples per micro-batch" },
  epochs: { type: "int", default: 1, doc: "passes over the dataset" },
  max_steps_per_epoch: { type: "int", default: null, doc: "stop each epoch after this many steps" },
  stop_after_steps: {
    type: "int",
    default: null,
    doc: "end the run after this many optimizer steps in total, with a checkpoint; the lr " +
      "schedule still spans all epochs, so resume_from_checkpoint=True continues exactly",
  },
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
    doc:
      "keep saved activations in pinned host memory between forward and backward, copied on a side stream (device=cuda; refused on cpu)",
  },
  device: { type: "string", default: "cpu", choices: ["cpu", "cuda"], doc: "where to train" },
  dtype: { type: "string", default: "fp32", choices: ["fp32", "bf16"], doc: "compute dtype" },
  output_dir: { type: "string", default: "out", doc: "checkpoints and logs go here" },
  metric_logger: {
    type: "component",
    kind: "metric_logger",
    default: null,
    doc: "where metrics go besides <output_dir>/metrics.jsonl (null: nowhere else)",
  },
  log_every_n_steps: {
    type: "int",
    default: 1,
    doc: "log metrics (and, when stderr is not a terminal, a progress line) every n steps",
  },
  log_peak_memory_stats: {
    type: "bool",
    default: false,
    doc: "print the model's memory (parameters, gradients, optimizer, activations) at setup",
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
} satisfies ParamSchema;

/** The keys of torchtune's distributed configs that only a sharded run reads. */
export const distributedOnlyParams = {
  fsdp_cpu_offload: {
    type: "bool",
    default: false,
    doc: "keep each rank's trainable slices, gradients and AdamW state in host memory and step " +
      "them there (CUDA; one process then runs sharded too); refused on device=cpu",
  },
  custom_sharded_layers: {
    type: "string[]",
    default: null,
    doc: "accepted for torchtune configs; ignored (every layer group is sharded)",
  },
} satisfies ParamSchema;

/** What the training loop and setup read of a resolved config (every fine-tuning recipe has these). */
export type FinetuneKeys = ResolvedConfig<typeof finetuneParams> & {
  /** The model builder (each recipe documents which kind). */
  model: ComponentSection;
  /** Validation during training (absent in the preference recipes). */
  dataset_val?: ComponentSection | null;
  run_val_every_n_steps?: number | null;
};

/**
 * `params` without the keys `drop`: a recipe that passes fine-tuning its own task drops the
 * keys only supervised training reads (e.g. `Object.keys(validationParams)`).
 */
export function withoutKeys<S extends ParamSchema, K extends keyof S & string>(
  params: S,
  drop: readonly K[],
): Omit<S, K> {
  const kept = Object.entries(params).filter(([k]) => !(drop as readonly string[]).includes(k));
  return Object.fromEntries(kept) as Omit<S, K>;
}

type WithoutDistributed<S> = Omit<S, keyof typeof distributedOnlyParams>;

/** A recipe's keys for its `_single_device` entry: no distributed-only keys, its own output_dir. */
export function singleDeviceParams<S extends ParamSchema>(
  params: S,
  name: string,
): WithoutDistributed<S> & { output_dir: { type: "string"; default: string; doc: string } } {
  const { fsdp_cpu_offload: _f, custom_sharded_layers: _c, ...rest } = params;
  return {
    ...rest as WithoutDistributed<S>,
    output_dir: { type: "string", default: `out/${name}`, doc: "checkpoints and logs go here" },
  };
}

/** A recipe's keys for its `_distributed` entry: per-rank batch docs, its own output_dir. */
export function distributedParams<S extends ParamSchema>(
  params: S,
  name: string,
  batchUnit = "examples",
): S & {
  batch_size: { type: "int"; default: number; doc: string };
  device: { type: "string"; default: string; choices: string[]; doc: string };
  output_dir: { type: "string"; default: string; doc: string };
} {
  const batch = params.batch_size;
  return {
    ...params,
    batch_size: {
      type: "int",
      default: batch?.type === "int" && typeof batch.default === "number" ? batch.default : 2,
      doc:
        `${batchUnit} per micro-batch on each rank (the global batch is batch_size * world size)`,
    },
    device: {
      type: "string",
      default: "cpu",
      choices: ["cpu", "cuda"],
      doc: "where to train: one process per device (CPU: collectives over TCP; CUDA: NCCL)",
    },
    output_dir: { type: "string", default: `out/${name}`, doc: "checkpoints and logs go here" },
  };
}
