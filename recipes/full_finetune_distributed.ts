/**
 * Full fine-tuning sharded over several processes (torchtune's full_finetune_distributed).
 *
 *   deno task tune run --nproc_per_node 2 full_finetune_distributed --config tiny/full_distributed
 *
 * One process per device (started by `tune --nproc_per_node`, torchrun, SLURM or mpirun).
 * The weights are sharded FSDP/ZeRO-3 style (src/training/sharded.ts): each rank keeps the
 * fp32 values, reduced gradients and AdamW moments of its slice of every layer group only;
 * each group's full weights are all-gathered into one reusable group-sized buffer just
 * before its forward and again before its backward, and its gradients are reduce-scattered
 * into the rank's slice right after its backward. So a rank holds 1/world of the weights,
 * gradients and optimizer state of a single process, plus one group's compute buffers. Each rank
 * trains on its part of the global batch (batch_size per rank, DistributedSampler order);
 * the loss is normalised by the token count of the whole global batch, so the losses and
 * weights are those of full_finetune_single_device with batch_size * world size. Rank 0
 * logs and writes checkpoints (the gathered model in the checkpointer's format, and the
 * gathered recipe state, which a single-device run can also resume from).
 *
 * A rank that dies or hangs makes the next collective on the others fail with a message
 * naming it (TUNE_DIST_TIMEOUT bounds a hang); nothing here catches that error.
 */
import "../src/components.ts";
import { join } from "node:path";
import type { Backend } from "../src/backend/ops.ts";
import type { Checkpointer, LoadedCheckpoint } from "../src/checkpoint/checkpointer.ts";
import type { RecipeState } from "../src/checkpoint/recipe_state.ts";
import { instantiate } from "../src/config/instantiate.ts";
import type { LaunchOptions } from "../src/config/recipe.ts";
import type { ParamSchema, ResolvedConfig } from "../src/config/schema.ts";
import type { ProcessGroup } from "../src/distributed/process_group.ts";
import type { TokenizedDataset } from "../src/data/mod.ts";
import { TuneError } from "../src/errors.ts";
import { createLlama, type LlamaModel } from "../src/models/llama/mod.ts";
import type { ModelSpec } from "../src/models/model_spec.ts";
import { AdamW, type AdamWOptions } from "../src/optim/adamw.ts";
import { type CrossEntropyLoss, prepareLabels } from "../src/optim/loss.ts";
import { type CosineWithWarmup, LrScheduler } from "../src/optim/lr_schedule.ts";
import { checkVocabMatches } from "../src/tokenizers/mod.ts";
import type { Tokenizer } from "../src/tokenizers/types.ts";
import {
  type HostMoments,
  loadRecipeStateFor,
  recipeStateMoments,
  restoreTrainingState,
  saveTrainingCheckpoint,
  type TrainingProgress,
} from "../src/training/checkpointing.ts";
import { packingOf, setupData, type TrainingData } from "../src/training/data.ts";
import type { MetricLogger } from "../src/training/metric_logging.ts";
import { checkFiniteLoss } from "../src/training/nan_guard.ts";
import type { FinetuneHooks } from "../src/training/recipe_api.ts";
import { RunLog, type StepMetrics } from "../src/training/run_log.ts";
import { resolveSeed } from "../src/training/seed.ts";
import {
  loadValidation,
  longestSample,
  scoreLossSharded,
  validationParams,
} from "../src/training/validation.ts";
import { allSumF64, ShardedOptimizer } from "../src/training/sharded.ts";
import { barrierAfterSave, broadcastInt, setupDistributed } from "../src/training/sharded_setup.ts";
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
  batch_size: {
    type: "int",
    default: 2,
    doc: "examples per micro-batch on each rank (the global batch is batch_size * world size)",
  },
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
  fsdp_cpu_offload: {
    type: "bool",
    default: false,
    doc: "accepted for torchtune configs; ignored (memory-only option)",
  },
  custom_sharded_layers: {
    type: "string[]",
    default: null,
    doc: "accepted for torchtune configs; ignored (every layer group is sharded)",
  },
  device: {
    type: "string",
    default: "cpu",
    choices: ["cpu", "cuda"],
    doc: "where to train: one process per device (CPU: collectives over TCP; CUDA: NCCL)",
  },
  dtype: { type: "string", default: "fp32", choices: ["fp32", "bf16"], doc: "compute dtype" },
  output_dir: {
    type: "string",
    default: "out/full_finetune_distributed",
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
export type FullFinetuneDistributedConfig = ResolvedConfig<typeof params>;

const NAME = "full_finetune_distributed";

/** The recipe: `setup()` then `train()`, on every rank. */
export class FullFinetuneRecipeDistributed {
  seed!: number;
  group!: ProcessGroup;
  backend!: Backend;
  /** Rank 0 only: metrics, progress and the summary. */
  log: RunLog | null = null;
  checkpointer!: Checkpointer;
  tokenizer!: Tokenizer;
  data!: TrainingData;
  model!: LlamaModel;
  optimizer!: AdamW;
  sharded!: ShardedOptimizer;
  loss!: CrossEntropyLoss;
  scheduler!: LrScheduler | null;
  progress!: TrainingProgress;
  stepsPerEpoch!: number;
  lastCheckpoint: string | null = null;
  /** dataset_val, when run_val_every_n_steps is set. */
  validation: TokenizedDataset | null = null;

  constructor(readonly cfg: FullFinetuneDistributedConfig, readonly hooks: FinetuneHooks = {}) {}

  async setup(): Promise<void> {
    const cfg = this.cfg;
    // The model builder first: it is only a description, and everything else checks against it.
    const spec = instantiate<ModelSpec>(cfg.model);
    if (spec.lora) {
      throw new TuneError(
        `model ${cfg.model._component_} has LoRA adapters; use a builder without lora_ or the lora_finetune_distributed recipe`,
      );
    }
    const dtypes = modelDtypes(cfg.dtype, cfg.device);

    // Process group and backend next: a missing peer or GPU should fail before any slow load.
    const dist = await setupDistributed(cfg.device as "cpu" | "cuda");
    this.group = dist.group;
    this.backend = dist.backend;
    const main = this.group.isMain;
    const say = (s: string) => main && !this.hooks.quiet && console.error(s);
    if (dtypes.note) say(dtypes.note);

    // Checkpoint: every rank reads the weights (and the recipe state when resuming).
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
    // The seed: a resumed run keeps its own; a fresh random one is rank 0's, on every rank.
    this.seed = state ? state.seed : await broadcastInt(this.backend, resolveSeed(cfg.seed));
    if (cfg.seed === null && !state) {
      say(`seed: ${this.seed} (set seed=${this.seed} to repeat this run)`);
    }

    // Tokenizer: must fit the model's vocabulary.
    this.tokenizer = instantiate<Tokenizer>(cfg.tokenizer);
    checkVocabMatches(this.tokenizer, spec.config.vocabSize, String(cfg.tokenizer.path));

    // Loss: cross-entropy, mean over the counted tokens of a whole global optimizer step.
    this.loss = cfg.loss
      ? instantiate<CrossEntropyLoss>(cfg.loss)
      : { kind: "cross_entropy", ignoreIndex: -100, numOutputChunks: 1 };

    // Data: this rank's share of every global batch (torch's DistributedSampler order).
    // (dataset_val first: the model's T must fit its samples too)
    this.validation = await loadValidation(cfg, this.tokenizer);
    this.data = await setupData(cfg.dataset, this.tokenizer, {
      batchSize: cfg.batch_size,
      seed: this.seed,
      shuffle: cfg.shuffle,
      modelMaxSeqLen: spec.config.maxSeqLen,
      minSeqLen: longestSample(this.validation),
      rank: this.group.rank,
      worldSize: this.group.worldSize,
    });

    // Model: weights and gradients only in group-sized compute buffers (ZeRO-3); no moments.
    this.model = createLlama(this.backend, spec, {
      batch: cfg.batch_size,
      seqLen: this.data.seqLen,
      activationCheckpointing: cfg.enable_activation_checkpointing,
      seed: this.seed,
      logitChunks: this.loss.numOutputChunks,
      activationDtype: dtypes.activationDtype,
      frozenDtype: dtypes.frozenDtype,
      optimizerMoments: false,
      groupWindows: this.group.worldSize, // group buffers padded for in-place collectives
    });
    // Loading goes through a temporary full value buffer; each rank keeps only its slices.
    this.model.trainable.materialize();
    if (loaded) this.model.loadStateDict(loaded.stateDict);
    else this.model.initRandom(this.seed);

    // Optimizer: AdamW's hyper-parameters and step count; the update runs on this rank's shard.
    this.optimizer = new AdamW(
      this.backend,
      this.model.trainable,
      instantiate<AdamWOptions>(cfg.optimizer),
    );
    this.sharded = new ShardedOptimizer(this.backend, this.model.trainable, this.optimizer);
    this.model.groupHooks = this.sharded;
    // Resume: weights, step and data position from the recipe state; this rank's moments.
    if (state) {
      this.progress = restoreTrainingState(state, this.model, this.optimizer);
      this.sharded.loadMoments(recipeStateMoments(state));
    } else {
      this.progress = { step: 0, epoch: 0, dataPosition: 0, seed: this.seed };
    }
    this.sharded.takeParams();
    this.model.trainable.release();
    const rep = this.sharded.report();
    if (!this.hooks.quiet) {
      console.error(
        `rank ${rep.rank}/${rep.worldSize} (pid ${Deno.pid}): optimizer state ${rep.optimizerBytes} bytes ` +
          `(m, v of ${rep.shardElements} of ${rep.fullElements} trainable elements; ` +
          `one process: ${rep.fullOptimizerBytes} bytes)`,
      );
      console.error(
        `rank ${rep.rank}/${rep.worldSize}: trainable params+grads resident ${rep.residentParamGradBytes} bytes ` +
          `(slices ${rep.shardParamGradBytes} + group buffers ${rep.computeParamGradBytes}; ` +
          `largest group ${rep.largestGroupBytes}; one process: ${rep.fullParamGradBytes} bytes)`,
      );
    }
    if (cfg.log_peak_memory_stats) {
      // the model reports its group buffers; the slices are the sharded optimizer's
      const own = this.model.memory();
      const slice = rep.shardElements * 4;
      const mem = {
        ...own,
        parameters: own.parameters + slice,
        gradients: own.gradients + slice,
        optimizer: rep.optimizerBytes,
      };
      say(`memory (bytes, rank 0): ${JSON.stringify(mem)}`);
    }

    // Steps per epoch (the same on every rank), then the scheduler that spans all of them.
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

    // Logging last, on rank 0: it truncates metrics.jsonl to the resumed step.
    if (main) {
      const logger = cfg.metric_logger ? instantiate<MetricLogger>(cfg.metric_logger) : null;
      logger?.logConfig(cfg as Record<string, unknown>);
      this.log = new RunLog(cfg.output_dir, {
        label: NAME,
        totalSteps: cfg.stop_after_steps ? Math.min(total, cfg.stop_after_steps) : total,
        logger,
        logEveryNSteps: cfg.log_every_n_steps,
        resumedAtStep: state ? this.progress.step : undefined,
        quiet: this.hooks.quiet,
      });
    }
  }

  /** The training loop (every rank runs it in lockstep); returns the steps' metrics. */
  async train(): Promise<StepMetrics[]> {
    const cfg = this.cfg;
    const { model, optimizer, backend, data, sharded } = this;
    const ga = cfg.gradient_accumulation_steps;
    const done: StepMetrics[] = [];
    const p = this.progress;
    const start = { epoch: p.epoch, step: Math.floor(p.dataPosition / ga) };
    for (let epoch = start.epoch; epoch < cfg.epochs; epoch++) {
      const first = epoch === start.epoch ? start.step : 0;
      for (let s = first; s < this.stepsPerEpoch; s++) {
        const t0 = performance.now();
        // One optimizer step = `ga` micro-batches on every rank; the loss is normalised by
        // the token total of all of them on all ranks (the global batch).
        const micro = Array.from({ length: ga }, (_, k) => data.loader.batch(epoch, s * ga + k));
        const labels = micro.map((b) => prepareLabels(this.loss, b.labels));
        const local = labels.reduce((n, l) => n + countTargets(l), 0);
        const [tokens] = await allSumF64(backend, [local]);
        sharded.zeroGrads();
        let lossSum = 0;
        for (let k = 0; k < ga; k++) {
          // each group: gathered before its forward and backward, its gradients summed over
          // ranks into this rank's slice right after its backward
          const r = await model.lossAndBackwardAsync(
            micro[k].tokens,
            labels[k],
            1 / Math.max(1, tokens),
            packingOf(micro[k]),
          );
          lossSum += r.lossSum;
        }
        const [globalLoss] = await allSumF64(backend, [lossSum]);
        const loss = globalLoss / Math.max(1, tokens);
        checkFiniteLoss(loss, p.step + 1, this.lastCheckpoint);
        const gradNorm = await sharded.clip(cfg.clip_grad_norm ?? Infinity);
        checkFiniteLoss(gradNorm, p.step + 1, this.lastCheckpoint, "gradient norm");
        const lr = this.scheduler ? this.scheduler.lrAt(p.step) : optimizer.options.lr;
        // AdamW on this rank's slices (the next forward gathers each group again).
        sharded.step(lr);
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
          const { rank, worldSize } = this.group;
          m.val_loss = await scoreLossSharded(
            this.model,
            this.validation,
            this.backend,
            rank,
            worldSize,
          );
        }
        this.log?.step(m, seconds);
        this.hooks.onStep?.(m);
        done.push(m);
        const endOfEpoch = s === this.stepsPerEpoch - 1;
        const stop = cfg.stop_after_steps !== null && p.step >= cfg.stop_after_steps;
        if (endOfEpoch) {
          await this.save(`epoch_${epoch}`, { ...p, epoch: epoch + 1, dataPosition: 0 });
        } else if (stop || (cfg.save_every_n_steps && p.step % cfg.save_every_n_steps === 0)) {
          await this.save(`step_${p.step}`, p);
        }
        if (stop) return done;
      }
    }
    return done;
  }

  /** Gather the moments (every rank), then rank 0 writes the checkpoint; all wait for it. */
  async save(dirName: string, progress: TrainingProgress): Promise<void> {
    const moments = await this.sharded.gatherMoments();
    // the full weights exist on every rank only while the checkpoint is written
    await this.sharded.withFullParams(() => this.#write(dirName, progress, moments));
    await barrierAfterSave(this.group);
  }

  #write(dirName: string, progress: TrainingProgress, moments: HostMoments): void {
    if (this.group.isMain) {
      const dir = saveTrainingCheckpoint({
        checkpointer: this.checkpointer,
        model: this.model,
        optimizer: this.optimizer,
        progress,
        dirName,
        moments,
      });
      this.lastCheckpoint = dir;
      this.log?.saved(dir);
      this.hooks.onSave?.(dir);
    } else {
      this.lastCheckpoint = join(String(this.cfg.checkpointer.output_dir), dirName);
    }
  }

  /** End the run: rank 0's summary, then leave the group and free the buffers. */
  async finish(): Promise<void> {
    this.log?.finish(this.lastCheckpoint ? [`checkpoint: ${this.lastCheckpoint}`] : []);
    await this.group.barrier();
    await this.group.close();
    this.sharded.free();
    this.model.free();
  }
}

/** Run the recipe on this rank. */
export async function main(
  cfg: FullFinetuneDistributedConfig,
  _launch: LaunchOptions,
): Promise<void> {
  const recipe = new FullFinetuneRecipeDistributed(cfg);
  await recipe.setup();
  await recipe.train();
  await recipe.finish();
}
