/**
 * LoRA fine-tuning on one device (torchtune's lora_finetune_single_device).
 *
 *   deno task tune run lora_finetune_single_device --config tiny/lora_single_device
 *
 * `setup()` builds everything in dependency order; `train()` is the whole loop. Outputs in
 * output_dir: `epoch_<N>/` (PEFT adapter_model.safetensors + adapter_config.json and the
 * merged weights in the checkpointer's format), `step_<N>/` for mid-epoch saves,
 * `recipe_state/` (exact resume), `metrics.jsonl` (one record per step), `loss_curve.svg`.
 *
 * In-process use (the demo): `await runLoraFinetune(cfg, launch, { onStep, quiet })`.
 */
import "../src/components.ts";
import type { Backend } from "../src/backend/ops.ts";
import { createBackend } from "../src/backend/select.ts";
import type { Checkpointer, LoadedCheckpoint } from "../src/checkpoint/checkpointer.ts";
import type { Batch, TokenizedDataset } from "../src/data/mod.ts";
import type { RecipeState } from "../src/checkpoint/recipe_state.ts";
import { instantiate } from "../src/config/instantiate.ts";
import type { LaunchOptions } from "../src/config/recipe.ts";
import type { ParamSchema, ResolvedConfig } from "../src/config/schema.ts";
import { TuneError } from "../src/errors.ts";
import { createLlama, type LlamaModel } from "../src/models/llama/mod.ts";
import type { ModelSpec } from "../src/models/model_spec.ts";
import { AdamW, type AdamWOptions } from "../src/optim/adamw.ts";
import { clipGradNorm } from "../src/optim/clip.ts";
import { type CrossEntropyLoss, prepareLabels } from "../src/optim/loss.ts";
import { type CosineWithWarmup, LrScheduler } from "../src/optim/lr_schedule.ts";
import { checkVocabMatches } from "../src/tokenizers/mod.ts";
import type { Tokenizer } from "../src/tokenizers/types.ts";
import {
  loadRecipeStateFor,
  restoreTrainingState,
  saveTrainingCheckpoint,
  type TrainingProgress,
} from "../src/training/checkpointing.ts";
import { packingOf, setupData, type TrainingData } from "../src/training/data.ts";
import type { MetricLogger } from "../src/training/metric_logging.ts";
import { checkFiniteLoss } from "../src/training/nan_guard.ts";
import type {
  BatchShape,
  FinetuneHooks,
  FinetuneResult,
  StepLoss,
} from "../src/training/recipe_api.ts";
import { RunLog, type StepMetrics } from "../src/training/run_log.ts";
import { resolveSeed } from "../src/training/seed.ts";
import {
  loadValidation,
  longestSample,
  scoreLoss,
  validationParams,
} from "../src/training/validation.ts";
import { countTargets, modelDtypes, stepsPerEpoch } from "../src/training/steps.ts";

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
    doc: "accepted for torchtune configs; ignored (memory-only option)",
  },
  device: { type: "string", default: "cpu", choices: ["cpu", "cuda"], doc: "where to train" },
  dtype: { type: "string", default: "fp32", choices: ["fp32", "bf16"], doc: "compute dtype" },
  output_dir: {
    type: "string",
    default: "out/lora_finetune_single_device",
    doc: "checkpoints and logs go here",
  },
  metric_logger: {
    type: "component",
    kind: "metric_logger",
    default: null,
    doc: "where metrics go besides <output_dir>/metrics.jsonl (null: nowhere else)",
  },
  log_every_n_steps: { type: "int", default: 1, doc: "log metrics every n optimizer steps" },
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
  ...validationParams,
} satisfies ParamSchema;

/**
 * Top-level keys of early torchtune overrides (`lora_rank=4`) and the model keys they set.
 */
export const keyAliases = {
  lora_attn_modules: "model.lora_attn_modules",
  lora_rank: "model.lora_rank",
  lora_alpha: "model.lora_alpha",
} as const;

/** The resolved config of this recipe. */
export type LoraFinetuneConfig = ResolvedConfig<typeof params>;

const NAME = "lora_finetune_single_device";

/** The recipe: `setup()` then `train()`. */
export class LoraFinetuneRecipeSingleDevice {
  seed!: number;
  backend!: Backend;
  log!: RunLog;
  checkpointer!: Checkpointer;
  tokenizer!: Tokenizer;
  data!: TrainingData;
  model!: LlamaModel;
  optimizer!: AdamW;
  loss!: CrossEntropyLoss;
  scheduler!: LrScheduler | null;
  progress!: TrainingProgress;
  stepsPerEpoch!: number;
  lastCheckpoint: string | null = null;
  /** dataset_val, when run_val_every_n_steps is set. */
  validation: TokenizedDataset | null = null;

  constructor(readonly cfg: LoraFinetuneConfig, readonly hooks: FinetuneHooks = {}) {}

  /** The name on the progress bar and the summary. */
  protected get recipeName(): string {
    return NAME;
  }

  async setup(): Promise<void> {
    const cfg = this.cfg;
    const say = (s: string) => this.hooks.quiet || console.error(s);
    // Metric logger first: the resolved config is on record even if a later step fails.
    const logger = cfg.metric_logger ? instantiate<MetricLogger>(cfg.metric_logger) : null;
    logger?.logConfig(cfg as Record<string, unknown>);
    // The model builder first: it is only a description, and everything else checks against it.
    const spec = instantiate<ModelSpec>(cfg.model);
    if (!spec.lora) {
      throw new TuneError(
        `model ${cfg.model._component_} has no LoRA adapters; use a lora_* builder or the full_finetune_single_device recipe`,
      );
    }
    // Backend next: device errors (no GPU, no libcuda) should come before any slow load.
    const dtypes = modelDtypes(cfg.dtype, cfg.device);
    if (dtypes.note) say(dtypes.note);
    this.backend = await createBackend(cfg.device as "cpu" | "cuda");

    // Checkpoint: base weights (and the recipe state when resuming) on the host.
    // The base always comes from the original checkpoint; what training changed (adapters,
    // moments, position) comes from the recipe state, in fp32, so resume is bitwise.
    this.checkpointer = instantiate<Checkpointer>(cfg.checkpointer);
    let loaded: LoadedCheckpoint | null = null;
    if (cfg.model_init === "checkpoint") {
      loaded = this.checkpointer.load({ resumeFromCheckpoint: false });
      // q/k rows lie as in the checkpoint's format
      spec.config = { ...spec.config, ropeLayout: loaded.config.ropeLayout };
    }
    const state: RecipeState | null = cfg.resume_from_checkpoint
      ? loadRecipeStateFor(cfg.checkpointer)
      : null;
    // The seed: a resumed run keeps the one it started with.
    this.seed = state ? state.seed : resolveSeed(cfg.seed);
    if (cfg.seed === null && !state) {
      say(`seed: ${this.seed} (set seed=${this.seed} to repeat this run)`);
    }

    // Tokenizer: must fit the model's vocabulary.
    this.tokenizer = instantiate<Tokenizer>(cfg.tokenizer);
    checkVocabMatches(this.tokenizer, spec.config.vocabSize, String(cfg.tokenizer.path));

    // Loss and data before the model: its buffers are allocated for the batch's (B, T).
    const shape = await this.setupLossAndData(spec);

    // Model: allocate, then base weights from the checkpoint (or seeded random) and adapters.
    this.model = createLlama(this.backend, spec, {
      batch: shape.batch,
      seqLen: shape.seqLen,
      activationCheckpointing: cfg.enable_activation_checkpointing,
      seed: this.seed,
      logitChunks: shape.logitChunks,
      activationDtype: dtypes.activationDtype,
      frozenDtype: dtypes.frozenDtype,
    });
    if (loaded) {
      const sd = new Map(loaded.stateDict);
      for (const [k, t] of loaded.adapter ?? []) sd.set(k, t);
      this.model.loadStateDict(sd);
    } else {
      this.model.initRandom(this.seed);
    }
    if (cfg.log_peak_memory_stats) say(`memory (bytes): ${JSON.stringify(this.model.memory())}`);

    // Optimizer over the adapters only (the base is frozen).
    this.optimizer = new AdamW(
      this.backend,
      this.model.trainable,
      instantiate<AdamWOptions>(cfg.optimizer),
    );
    // Resume: adapters, moments, step and data position from the recipe state.
    this.progress = state
      ? restoreTrainingState(state, this.model, this.optimizer)
      : { step: 0, epoch: 0, dataPosition: 0, seed: this.seed };

    // Steps per epoch, then the scheduler that spans all of them.
    this.stepsPerEpoch = stepsPerEpoch(
      shape.batchesPerEpoch,
      cfg.gradient_accumulation_steps,
      cfg.max_steps_per_epoch,
    );
    const total = cfg.epochs * this.stepsPerEpoch;
    this.scheduler = cfg.lr_scheduler
      ? new LrScheduler(
        instantiate<CosineWithWarmup>(cfg.lr_scheduler),
        this.optimizer.options.lr,
        total,
      )
      : null;

    // The run log last: on resume it cuts metrics.jsonl back to the checkpoint's step.
    this.log = new RunLog(cfg.output_dir, {
      label: this.recipeName,
      totalSteps: cfg.stop_after_steps ? Math.min(total, cfg.stop_after_steps) : total,
      logger,
      logEveryNSteps: cfg.log_every_n_steps,
      resumedAtStep: state ? this.progress.step : undefined,
      quiet: this.hooks.quiet,
    });
  }

  /**
   * Build the loss and load the data (set on this); returns the model's batch shape and
   * the loader's batches per epoch. A recipe with other data (preference pairs) replaces it.
   */
  protected async setupLossAndData(spec: ModelSpec): Promise<BatchShape> {
    const cfg = this.cfg;
    // Loss: cross-entropy, mean over the counted tokens of a whole optimizer step
    // (its num_output_chunks sizes the model's logits buffer).
    this.loss = cfg.loss
      ? instantiate<CrossEntropyLoss>(cfg.loss)
      : { kind: "cross_entropy", ignoreIndex: -100, numOutputChunks: 1 };
    // validation data first: the model's T must fit its samples too
    this.validation = await loadValidation(cfg, this.tokenizer);
    this.data = await setupData(cfg.dataset, this.tokenizer, {
      batchSize: cfg.batch_size,
      seed: this.seed,
      shuffle: cfg.shuffle,
      modelMaxSeqLen: spec.config.maxSeqLen,
      minSeqLen: longestSample(this.validation),
    });
    return {
      batch: cfg.batch_size,
      seqLen: this.data.seqLen,
      logitChunks: this.loss.numOutputChunks,
      batchesPerEpoch: this.data.loader.stepsPerEpoch,
    };
  }

  /**
   * Forward and backward of the `ga` micro-batches of step `s` of `epoch` (gradients
   * accumulate; the caller zeroed them): the step's mean loss, its counted tokens and any
   * recipe-specific metrics.
   */
  protected accumulateStep(epoch: number, s: number, ga: number): StepLoss {
    const { data } = this;
    // One optimizer step = `ga` micro-batches; the loss is normalised by their token total.
    const micro = Array.from({ length: ga }, (_, k) => data.loader.batch(epoch, s * ga + k));
    const labels = micro.map((b) => prepareLabels(this.loss, b.labels));
    const tokens = labels.reduce((n, l) => n + countTargets(l), 0);
    const n = Math.max(1, tokens);
    const sums: Record<string, number> = {};
    let lossSum = 0;
    for (let k = 0; k < ga; k++) lossSum += this.microBatch(micro[k], labels[k], 1 / n, sums);
    const metrics = Object.fromEntries(Object.entries(sums).map(([k, v]) => [k, v / n]));
    return { loss: lossSum / n, tokens, metrics };
  }

  /**
   * Forward and backward of one micro-batch with gradients scaled by `gradScale`; returns
   * its summed token loss and adds any per-token metric sums to `sums` (logged as means
   * over the step's tokens). A recipe with another loss (distillation) replaces it.
   */
  protected microBatch(
    batch: Batch,
    labels: Int32Array,
    gradScale: number,
    _sums: Record<string, number>,
  ): number {
    return this.model.lossAndBackward(batch.tokens, labels, gradScale, packingOf(batch)).lossSum;
  }

  /** The training loop; returns the steps' metrics. */
  train(): StepMetrics[] {
    const cfg = this.cfg;
    const { model, optimizer, backend } = this;
    const ga = cfg.gradient_accumulation_steps;
    const done: StepMetrics[] = [];
    const p = this.progress;
    const start = { epoch: p.epoch, step: Math.floor(p.dataPosition / ga) };
    for (let epoch = start.epoch; epoch < cfg.epochs; epoch++) {
      const first = epoch === start.epoch ? start.step : 0;
      for (let s = first; s < this.stepsPerEpoch; s++) {
        if (cfg.stop_after_steps !== null && p.step >= cfg.stop_after_steps) return done;
        const t0 = performance.now();
        model.zeroGrad();
        const { loss, tokens, metrics } = this.accumulateStep(epoch, s, ga);
        checkFiniteLoss(loss, p.step + 1, this.lastCheckpoint);
        const gradNorm = clipGradNorm(backend, model.trainable, cfg.clip_grad_norm ?? Infinity);
        checkFiniteLoss(gradNorm, p.step + 1, this.lastCheckpoint, "gradient norm");
        const lr = this.scheduler ? this.scheduler.lrAt(p.step) : optimizer.options.lr;
        optimizer.step(lr);
        p.step++;
        p.epoch = epoch;
        p.dataPosition = (s + 1) * ga;
        const seconds = (performance.now() - t0) / 1000;
        const m: StepMetrics = {
          step: p.step,
          epoch,
          loss,
          lr,
          grad_norm: gradNorm,
          tokens,
          tokens_per_s: tokens / Math.max(seconds, 1e-9),
          ...metrics,
        };
        const every = cfg.run_val_every_n_steps;
        if (this.validation && every !== null && p.step % every === 0) {
          m.val_loss = scoreLoss(model, this.validation);
        }
        this.log.step(m, seconds);
        this.hooks.onStep?.(m);
        done.push(m);
        const endOfEpoch = s === this.stepsPerEpoch - 1;
        const stop = cfg.stop_after_steps !== null && p.step >= cfg.stop_after_steps;
        if (endOfEpoch) {
          this.save(`epoch_${epoch}`, { ...p, epoch: epoch + 1, dataPosition: 0 });
        } else if (stop || (cfg.save_every_n_steps && p.step % cfg.save_every_n_steps === 0)) {
          this.save(`step_${p.step}`, p);
        }
        if (stop) return done;
      }
    }
    return done;
  }

  save(dirName: string, progress: TrainingProgress): void {
    const dir = saveTrainingCheckpoint({
      checkpointer: this.checkpointer,
      model: this.model,
      optimizer: this.optimizer,
      progress,
      dirName,
      adapterOnly: this.cfg.save_adapter_weights_only,
    });
    this.lastCheckpoint = dir;
    this.log.saved(dir);
    this.hooks.onSave?.(dir);
  }
}

/** Run the recipe in this process and return what it produced (the demo calls this). */
export async function runLoraFinetune(
  cfg: LoraFinetuneConfig,
  _launch: LaunchOptions,
  hooks: FinetuneHooks = {},
): Promise<FinetuneResult> {
  return await runRecipe(new LoraFinetuneRecipeSingleDevice(cfg, hooks));
}

/** Set up and train a recipe of this family in this process; return what it produced. */
export async function runRecipe(recipe: LoraFinetuneRecipeSingleDevice): Promise<FinetuneResult> {
  const cfg = recipe.cfg;
  await recipe.setup();
  const steps = recipe.train();
  const lossCurvePath = recipe.log.finish(
    recipe.lastCheckpoint ? [`checkpoint: ${recipe.lastCheckpoint}`] : [],
  );
  return {
    outputDir: cfg.output_dir,
    metricsPath: recipe.log.metricsPath,
    lossCurvePath,
    checkpointDir: recipe.lastCheckpoint,
    steps,
    model: recipe.model,
    tokenizer: recipe.tokenizer,
    seed: recipe.seed,
  };
}

/** Run the recipe. */
export async function main(cfg: LoraFinetuneConfig, launch: LaunchOptions): Promise<void> {
  const r = await runLoraFinetune(cfg, launch);
  r.model.free();
}
