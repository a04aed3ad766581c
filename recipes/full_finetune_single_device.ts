/**
 * Full fine-tuning on one device (torchtune's full_finetune_single_device).
 *
 *   deno task tune run full_finetune_single_device --config tiny/full_single_device
 *
 * `setup()` builds everything in dependency order; `train()` is the whole loop. Outputs in
 * output_dir: `epoch_<N>/` (the model in the checkpointer's format), `step_<N>/` for
 * mid-epoch saves, `recipe_state/` (exact resume), `metrics.jsonl` (one record per step),
 * `loss_curve.svg`.
 *
 * In-process use: `await runFullFinetune(cfg, launch, { onStep, quiet })`.
 */
import "../src/components.ts";
import type { Backend } from "../src/backend/ops.ts";
import { createBackend } from "../src/backend/select.ts";
import type { Checkpointer, LoadedCheckpoint } from "../src/checkpoint/checkpointer.ts";
import type { RecipeState } from "../src/checkpoint/recipe_state.ts";
import { instantiate } from "../src/config/instantiate.ts";
import type { LaunchOptions } from "../src/config/recipe.ts";
import type { ParamSchema, ResolvedConfig } from "../src/config/schema.ts";
import type { TokenizedDataset } from "../src/data/mod.ts";
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
import type { FinetuneHooks, FinetuneResult } from "../src/training/recipe_api.ts";
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
    doc: "model builder (not a lora_* builder)",
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
    doc: "checkpoint: weights from the checkpointer; random: seeded fresh weights " +
      "(tiny test models; the checkpointer then only writes)",
  },
  resume_from_checkpoint: {
    type: "bool",
    default: false,
    doc: "resume training from the checkpointer's recipe state",
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
  optimizer_in_bwd: {
    type: "bool",
    default: false,
    doc: "accepted for torchtune configs; ignored (memory-only option)",
  },
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
    default: "out/full_finetune_single_device",
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

/** This recipe has no top-level alias keys. */
export const keyAliases = {} as const;

/** The resolved config of this recipe. */
export type FullFinetuneConfig = ResolvedConfig<typeof params>;

const NAME = "full_finetune_single_device";

/** The recipe: `setup()` then `train()`. */
export class FullFinetuneRecipeSingleDevice {
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

  constructor(readonly cfg: FullFinetuneConfig, readonly hooks: FinetuneHooks = {}) {}

  async setup(): Promise<void> {
    const cfg = this.cfg;
    const say = (s: string) => this.hooks.quiet || console.error(s);
    // Metric logger first: the resolved config is on record even if a later step fails.
    const logger = cfg.metric_logger ? instantiate<MetricLogger>(cfg.metric_logger) : null;
    logger?.logConfig(cfg as Record<string, unknown>);
    // The model builder first: it is only a description, and everything else checks against it.
    const spec = instantiate<ModelSpec>(cfg.model);
    if (spec.lora) {
      throw new TuneError(
        `model ${cfg.model._component_} has LoRA adapters; use a builder without lora_ or the lora_finetune_single_device recipe`,
      );
    }
    // Backend next: device errors (no GPU, no libcuda) should come before any slow load.
    const dtypes = modelDtypes(cfg.dtype, cfg.device);
    if (dtypes.note) say(dtypes.note);
    this.backend = await createBackend(cfg.device as "cpu" | "cuda");

    // Checkpoint: weights (and the recipe state when resuming) on the host. On resume the
    // trained weights, moments and position come from the recipe state, in fp32, so resume
    // is bitwise whatever dtype the output format stores.
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

    // Loss: cross-entropy, mean over the counted tokens of a whole optimizer step
    // (its num_output_chunks sizes the model's logits buffer).
    this.loss = cfg.loss
      ? instantiate<CrossEntropyLoss>(cfg.loss)
      : { kind: "cross_entropy", ignoreIndex: -100, numOutputChunks: 1 };

    // Data before the model: the model's buffers are allocated for the batch's (B, T), which
    // must fit the validation samples too.
    this.validation = await loadValidation(cfg, this.tokenizer);
    this.data = await setupData(cfg.dataset, this.tokenizer, {
      batchSize: cfg.batch_size,
      seed: this.seed,
      shuffle: cfg.shuffle,
      modelMaxSeqLen: spec.config.maxSeqLen,
      minSeqLen: longestSample(this.validation),
    });

    // Model: allocate, then weights from the checkpoint (or seeded random).
    this.model = createLlama(this.backend, spec, {
      batch: cfg.batch_size,
      seqLen: this.data.seqLen,
      activationCheckpointing: cfg.enable_activation_checkpointing,
      seed: this.seed,
      logitChunks: this.loss.numOutputChunks,
      activationDtype: dtypes.activationDtype,
      frozenDtype: dtypes.frozenDtype,
    });
    if (loaded) {
      this.model.loadStateDict(loaded.stateDict);
    } else {
      this.model.initRandom(this.seed);
    }
    if (cfg.log_peak_memory_stats) say(`memory (bytes): ${JSON.stringify(this.model.memory())}`);

    // Optimizer over every weight.
    this.optimizer = new AdamW(
      this.backend,
      this.model.trainable,
      instantiate<AdamWOptions>(cfg.optimizer),
    );
    // Resume: weights, moments, step and data position from the recipe state.
    this.progress = state
      ? restoreTrainingState(state, this.model, this.optimizer)
      : { step: 0, epoch: 0, dataPosition: 0, seed: this.seed };

    // Steps per epoch, then the scheduler that spans all of them.
    this.stepsPerEpoch = stepsPerEpoch(
      this.data.loader.stepsPerEpoch,
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
      label: NAME,
      totalSteps: cfg.stop_after_steps ? Math.min(total, cfg.stop_after_steps) : total,
      logger,
      logEveryNSteps: cfg.log_every_n_steps,
      resumedAtStep: state ? this.progress.step : undefined,
      quiet: this.hooks.quiet,
    });
  }

  /** The training loop; returns the steps' metrics. */
  train(): StepMetrics[] {
    const cfg = this.cfg;
    const { model, optimizer, backend, data } = this;
    const ga = cfg.gradient_accumulation_steps;
    const done: StepMetrics[] = [];
    const p = this.progress;
    const start = { epoch: p.epoch, step: Math.floor(p.dataPosition / ga) };
    for (let epoch = start.epoch; epoch < cfg.epochs; epoch++) {
      const first = epoch === start.epoch ? start.step : 0;
      for (let s = first; s < this.stepsPerEpoch; s++) {
        if (cfg.stop_after_steps !== null && p.step >= cfg.stop_after_steps) return done;
        const t0 = performance.now();
        // One optimizer step = `ga` micro-batches; the loss is normalised by their token total.
        const micro = Array.from({ length: ga }, (_, k) => data.loader.batch(epoch, s * ga + k));
        const labels = micro.map((b) => prepareLabels(this.loss, b.labels));
        const tokens = labels.reduce((n, l) => n + countTargets(l), 0);
        model.zeroGrad();
        let lossSum = 0;
        for (let k = 0; k < ga; k++) {
          const scale = 1 / Math.max(1, tokens);
          lossSum += model.lossAndBackward(micro[k].tokens, labels[k], scale, packingOf(micro[k]))
            .lossSum;
        }
        const loss = lossSum / Math.max(1, tokens);
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
    });
    this.lastCheckpoint = dir;
    this.log.saved(dir);
    this.hooks.onSave?.(dir);
  }
}

/** Run the recipe in this process and return what it produced. */
export async function runFullFinetune(
  cfg: FullFinetuneConfig,
  _launch: LaunchOptions,
  hooks: FinetuneHooks = {},
): Promise<FinetuneResult> {
  const recipe = new FullFinetuneRecipeSingleDevice(cfg, hooks);
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
export async function main(cfg: FullFinetuneConfig, launch: LaunchOptions): Promise<void> {
  const r = await runFullFinetune(cfg, launch);
  r.model.free();
}
