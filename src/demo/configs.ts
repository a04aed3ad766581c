/**
 * The demo's two training runs as ordinary recipe configs (the trees a YAML file would
 * hold), resolved by the same machinery as `tune run`: phase 1 runs
 * full_finetune_single_device from a seeded random init on task A; phase 2 runs
 * lora_finetune_single_device on task B from phase 1's checkpoint. Both write llama2.c
 * `model.bin` files, so `tune run generate --config llama2c/generate` reads them.
 */
import { join } from "node:path";

/** The demo's model, shared by both phases. */
export interface DemoModel {
  vocabSize: number;
  dim: number;
  layers: number;
  heads: number;
  hidden: number;
  maxSeqLen: number;
}

/** What the phase configs need. */
export interface PhaseOptions {
  /** The demo's output directory. */
  outputDir: string;
  seed: number;
  model: DemoModel;
  batchSize: number;
  steps: number;
  lr: number;
}

/** The tiny Llama of the demos (about 0.1M parameters besides the embeddings). */
export const DEMO_MODEL: Omit<DemoModel, "vocabSize"> = {
  dim: 64,
  layers: 2,
  heads: 4,
  hidden: 192,
  maxSeqLen: 32,
};

/** The generic builder's keys of the demo model (tune.models.llama or lora_llama). */
export function modelSection(m: DemoModel): Record<string, unknown> {
  return {
    vocab_size: m.vocabSize,
    num_layers: m.layers,
    num_heads: m.heads,
    num_kv_heads: m.heads,
    embed_dim: m.dim,
    intermediate_dim: m.hidden,
    max_seq_len: m.maxSeqLen,
    norm_eps: 1e-5,
    tie_word_embeddings: false,
    rope_layout: "interleaved",
  };
}

/** The checkpointer section: llama2.c model.bin read from `dir`, written to output_dir. */
export function llama2cCheckpointer(dir: string): Record<string, unknown> {
  return {
    _component_: "tune.training.Llama2cCheckpointer",
    checkpoint_dir: dir,
    checkpoint_files: ["model.bin"],
    output_dir: "${output_dir}",
    model_type: "LLAMA2C",
  };
}

function common(o: PhaseOptions, dir: string, dataFile: string): Record<string, unknown> {
  return {
    output_dir: dir,
    tokenizer: {
      _component_: "tune.tokenizers.load",
      path: join(o.outputDir, "data", "tokenizer.bin"),
      max_seq_len: o.model.maxSeqLen,
    },
    dataset: {
      _component_: "torchtune.datasets.alpaca_dataset",
      source: "json",
      data_files: join(o.outputDir, "data", dataFile),
      train_on_input: false,
    },
    seed: o.seed,
    shuffle: true,
    batch_size: o.batchSize,
    epochs: 1,
    max_steps_per_epoch: o.steps,
    gradient_accumulation_steps: 1,
    optimizer: { _component_: "torch.optim.AdamW", lr: o.lr, weight_decay: 0.0 },
    lr_scheduler: {
      _component_: "torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup",
      num_warmup_steps: Math.max(1, Math.round(o.steps / 20)),
    },
    loss: { _component_: "torch.nn.CrossEntropyLoss" },
    clip_grad_norm: 1.0,
    device: "cpu",
    dtype: "fp32",
    enable_activation_checkpointing: false,
    log_every_n_steps: 1,
  };
}

/** Phase 1 (full_finetune_single_device): a seeded random Llama learns the format on task A. */
export function pretrainConfig(o: PhaseOptions): Record<string, unknown> {
  const dir = join(o.outputDir, "pretrain");
  return {
    ...common(o, dir, "pretrain.jsonl"),
    model: { _component_: "tune.models.llama", ...modelSection(o.model) },
    model_init: "random",
    checkpointer: llama2cCheckpointer("${output_dir}"),
  };
}

/** LoRA settings of phase 2. */
export interface LoraOptions {
  rank: number;
  alpha: number;
}

/** Phase 2 (lora_finetune_single_device): LoRA on task B from phase 1's weights. */
export function loraConfig(
  o: PhaseOptions,
  lora: LoraOptions,
  baseDir: string,
): Record<string, unknown> {
  const dir = join(o.outputDir, "lora");
  return {
    ...common(o, dir, "finetune.jsonl"),
    model: {
      _component_: "tune.models.lora_llama",
      ...modelSection(o.model),
      lora_attn_modules: ["q_proj", "k_proj", "v_proj", "output_proj"],
      apply_lora_to_mlp: true,
      apply_lora_to_output: false,
      lora_rank: lora.rank,
      lora_alpha: lora.alpha,
      lora_dropout: 0.0,
    },
    model_init: "checkpoint",
    checkpointer: llama2cCheckpointer(baseDir),
    save_adapter_weights_only: false,
  };
}
