/**
 * Fine-tuning, full or LoRA, on one or more processes: torchtune's
 * full_finetune_single_device, full_finetune_distributed, lora_finetune_single_device and
 * lora_finetune_distributed are the entry points of this one recipe (recipes/<name>.ts give
 * each its defaults; what is trained follows from the model builder: every weight, or the
 * LoRA adapters over a frozen base).
 *
 *   deno task tune run lora_finetune_single_device --config tiny/lora_single_device
 *   deno task tune run --nproc_per_node 2 full_finetune_distributed --config tiny/full_distributed
 *
 * `setup()` builds everything in dependency order; `train()` is the whole loop; `save()`
 * writes a checkpoint; `cleanup()` ends the run. Outputs in output_dir: `epoch_<N>/` (the
 * model in the checkpointer's format; under LoRA the PEFT adapter_model.safetensors +
 * adapter_config.json and the merged weights), `step_<N>/` for mid-epoch saves,
 * `recipe_state/` (exact resume), `metrics.jsonl` (one record per step), `loss_curve.svg`.
 *
 * On N processes (started by `tune --nproc_per_node`, torchrun, SLURM or mpirun) the
 * trained weights are sharded FSDP/ZeRO-3 style (src/training/sharded.ts): each rank keeps
 * the fp32 values, reduced gradients and AdamW moments of its slice of every layer group;
 * a group's weights (and a LoRA model's frozen base) are all-gathered into reusable
 * group-sized buffers before it runs, and its gradients reduce-scattered right after its
 * backward. Each rank trains on its share of the global batch (batch_size per rank,
 * DistributedSampler order); the loss is normalised by the token count of the whole global
 * batch, so losses and weights are those of one process with batch_size * world size (with
 * lora_dropout > 0 the masks differ). Rank 0 logs and writes checkpoints. On one process
 * nothing is sharded. A rank that dies or hangs makes the next collective on the others
 * fail naming it (TUNE_DIST_TIMEOUT bounds a hang).
 *
 * What the model trains on is a task passed in (src/training/tasks.ts): supervised
 * cross-entropy by default; recipes/lora_dpo.ts and recipes/knowledge_distillation.ts pass
 * a preference or distillation head with their data. Ctrl-C (or SIGTERM) stops after the
 * current step with a resumable checkpoint and prints the command that resumes.
 *
 * In-process use (the demo): `await runFinetune(cfg, { name, launch, hooks })`.
 */
import "../src/components.ts";
import { join } from "node:path";
import type { Checkpointer } from "../src/checkpoint/checkpointer.ts";
import { instantiate } from "../src/config/instantiate.ts";
import type { LaunchOptions } from "../src/config/recipe.ts";
import type { ComponentSection, ParamSchema, ResolvedConfig } from "../src/config/schema.ts";
import { TuneError } from "../src/errors.ts";
import type { LlamaModel } from "../src/models/llama/mod.ts";
import type { ModelSpec } from "../src/models/model_spec.ts";
import type { AdamWOptions } from "../src/optim/adamw.ts";
import { createOptimizer, needsStoreMoments, type TrainingOptimizer } from "../src/optim/create.ts";
import { refuseUnimplementedMemoryOptions } from "../src/training/memory_options.ts";
import type { LrScheduler } from "../src/optim/lr_schedule.ts";
import { checkVocabMatches } from "../src/tokenizers/mod.ts";
import type { Tokenizer } from "../src/tokenizers/types.ts";
import { saveTrainingCheckpoint, type TrainingProgress } from "../src/training/checkpointing.ts";
import { TrainLoop } from "../src/training/loop.ts";
import type { MetricLogger } from "../src/training/metric_logging.ts";
import {
  agreeSeed,
  joinRun,
  modelCalls,
  type Runtime,
  setupTrainable,
  type Trainable,
} from "../src/training/parallel.ts";
import type { FinetuneHooks, FinetuneResult } from "../src/training/recipe_api.ts";
import {
  distributedOnlyParams,
  type FinetuneKeys,
  finetuneParams,
} from "../src/training/recipe_params.ts";
import { batchRecord, loadResumeState } from "../src/training/resume.ts";
import { RunLog, type StepMetrics } from "../src/training/run_log.ts";
import { resolveSeed } from "../src/training/seed.ts";
import { buildModel, buildScheduler, loadWeights } from "../src/training/setup.ts";
import { modelDtypes, stepsPerEpoch } from "../src/training/steps.ts";
import { crossEntropyTask, type LossHead, type TaskBuilder } from "../src/training/tasks.ts";
import { validationParams } from "../src/training/validation.ts";
import { buildTokenizer } from "../src/training/tokenizer.ts";
import { type ProfilerSettings, StepProfiler } from "../src/training/profiler.ts";

/** The keys of full fine-tuning (full_finetune_* entries). */
export const fullParams = {
  model: {
    type: "component",
    kind: "model",
    required: true,
    doc: "model builder (not a lora_* builder)",
  },
  ...finetuneParams,
  optimizer_in_bwd: {
    type: "bool",
    default: false,
    doc:
      "step each parameter group's optimizer inside backward (needs clip_grad_norm null, gradient_accumulation_steps 1)",
  },
  ...distributedOnlyParams,
  ...validationParams,
} satisfies ParamSchema;

/** The keys of LoRA fine-tuning (lora_finetune_* entries). */
export const loraParams = {
  model: {
    type: "component",
    kind: "model",
    required: true,
    doc: "model builder (a lora_* builder)",
  },
  ...finetuneParams,
  save_adapter_weights_only: {
    type: "bool",
    default: false,
    doc: "save only the LoRA adapter weights, not the merged model",
  },
  optimizer_in_bwd: fullParams.optimizer_in_bwd,
  ...distributedOnlyParams,
  ...validationParams,
} satisfies ParamSchema;

/** Every top-level key a copy of this file reads (`tune cp`): full or LoRA, by the builder. */
export const params = {
  ...fullParams,
  ...loraParams,
  model: {
    type: "component",
    kind: "model",
    required: true,
    doc: "model builder (a lora_* builder trains adapters, any other every weight)",
  },
  output_dir: { type: "string", default: "out/finetune", doc: "checkpoints and logs go here" },
} satisfies ParamSchema;

/**
 * Top-level keys of early torchtune overrides (`lora_rank=4`) and the model keys they set.
 */
export const loraKeyAliases = {
  lora_attn_modules: "model.lora_attn_modules",
  lora_rank: "model.lora_rank",
  lora_alpha: "model.lora_alpha",
} as const;

/** The top-level aliases of a copy of this file. */
export const keyAliases = loraKeyAliases;

/** The resolved config of a copy of this file. */
export type FinetuneConfig = ResolvedConfig<typeof params>;

/** What the recipe reads: every fine-tuning key and, under LoRA, the adapter save option. */
export type RecipeKeys = FinetuneKeys & {
  save_adapter_weights_only?: boolean;
  optimizer_in_bwd?: boolean;
  /** The distributed entries' host state (absent from the single-device ones). */
  fsdp_cpu_offload?: boolean;
};

/** How a run of the recipe is named, launched and observed, and what it trains on. */
export interface RecipeOptions {
  /** The recipe's name, on the progress line and in the summary. */
  name: string;
  /** Which weights the model builder must train (default: whichever it gives). */
  method?: "full" | "lora";
  /** The command line (for the resume command printed after Ctrl-C). */
  launch: LaunchOptions;
  /** The data and loss head (default: cross-entropy on `dataset`). */
  task?: TaskBuilder;
  hooks?: FinetuneHooks;
}

/** The recipe: `setup()`, `train()`, `cleanup()`, on every rank. */
export class FinetuneRecipe {
  rt!: Runtime;
  seed!: number;
  /** Rank 0 only: metrics, progress and the summary. */
  log: RunLog | null = null;
  checkpointer!: Checkpointer;
  tokenizer!: Tokenizer;
  model!: LlamaModel;
  optimizer!: TrainingOptimizer;
  trainable!: Trainable;
  head!: LossHead;
  scheduler!: LrScheduler | null;
  loop!: TrainLoop;
  /** The `profiler` section's step traces, or null. */
  profiler: StepProfiler | null = null;
  readonly hooks: FinetuneHooks;

  constructor(readonly cfg: RecipeKeys, readonly opts: RecipeOptions) {
    this.hooks = opts.hooks ?? {};
  }

  async setup(): Promise<void> {
    const cfg = this.cfg;
    // The model builder first: it is only a description, and everything else checks against it.
    const spec = instantiate<ModelSpec>(cfg.model);
    checkMethod(spec, cfg.model, this.opts);
    refuseUnimplementedMemoryOptions(cfg);
    const dtypes = modelDtypes(cfg.dtype, cfg.device);

    // Process group and backend: a missing peer or GPU fails before any slow load.
    const hostState = cfg.fsdp_cpu_offload ?? false; // refused above where it cannot run
    const rt = this.rt = await joinRun(cfg.device as "cpu" | "cuda", { shardAlone: hostState });
    const say = (s: string) => rt.isMain && !this.hooks.quiet && console.error(s);
    if (dtypes.note) say(dtypes.note);
    // Metric logger (rank 0): the resolved config is on record even if a later step fails.
    const logger = rt.isMain && cfg.metric_logger
      ? instantiate<MetricLogger>(cfg.metric_logger)
      : null;
    logger?.logConfig(cfg as Record<string, unknown>);

    // Checkpoint: every rank reads the base weights; what training changed (adapters,
    // moments, position) comes from the recipe state, in fp32, so resume is bitwise.
    const { checkpointer, loaded } = loadWeights(cfg, spec);
    this.checkpointer = checkpointer;
    const state = loadResumeState(cfg, rt.worldSize, say);
    // The seed: a resumed run keeps its own; a fresh random one is rank 0's, on every rank.
    this.seed = state ? state.seed : await agreeSeed(rt, resolveSeed(cfg.seed));
    if (cfg.seed === null && !state) {
      say(`seed: ${this.seed} (set seed=${this.seed} to repeat this run)`);
    }

    // Tokenizer: must fit the model's vocabulary.
    const tok = buildTokenizer(cfg.tokenizer, cfg.checkpointer.checkpoint_dir as string);
    this.tokenizer = tok.tokenizer;
    checkVocabMatches(this.tokenizer, spec.config.vocabSize, tok.path);

    // Loss and this rank's data before the model: its buffers are sized for the batch.
    const build = this.opts.task ?? crossEntropyTask(cfg);
    const task = await build({ rt, tokenizer: this.tokenizer, spec, seed: this.seed });

    // Model: from the checkpoint (or seeded random); under LoRA a frozen base plus adapters
    // (an 8-bit optimizer keeps its moments outside the model's store).
    const optimizerOptions = instantiate<AdamWOptions>(cfg.optimizer);
    this.model = buildModel(rt, spec, task.shape, cfg, {
      seed: this.seed,
      loaded,
      optimizerMoments: needsStoreMoments(optimizerOptions, rt.backend),
    });

    // Optimizer over the trained weights (under LoRA the adapters only); on N processes
    // each rank updates its slice. Resume: weights, moments, step and data position.
    this.optimizer = createOptimizer(rt.backend, this.model.trainable, optimizerOptions);
    const { trainable, progress } = setupTrainable(rt, this.model, this.optimizer, state, {
      seed: this.seed,
      quiet: !!this.hooks.quiet,
      memoryStats: cfg.log_peak_memory_stats,
      optimizerInBwd: cfg.optimizer_in_bwd ?? false,
      hostState,
    });
    this.trainable = trainable;
    const calls = modelCalls(rt, this.model);
    this.head = task.head(this.model, calls, (fn) => trainable.withFullWeights(fn));

    // Steps per epoch (the same on every rank), then the scheduler that spans all of them.
    const perEpoch = stepsPerEpoch(
      task.shape.batchesPerEpoch,
      cfg.gradient_accumulation_steps,
      cfg.max_steps_per_epoch,
    );
    const total = cfg.epochs * perEpoch;
    this.scheduler = buildScheduler(cfg.lr_scheduler, this.optimizer, total);

    // The run log last (rank 0): on resume it cuts metrics.jsonl back to the checkpoint.
    if (rt.isMain) {
      this.log = new RunLog(cfg.output_dir, {
        label: this.opts.name,
        totalSteps: cfg.stop_after_steps ? Math.min(total, cfg.stop_after_steps) : total,
        epochs: cfg.epochs,
        logger,
        logEveryNSteps: cfg.log_every_n_steps,
        resumedAtStep: state ? progress.step : undefined,
        quiet: this.hooks.quiet,
      });
    }
    // Profiler (torchtune's profiler section): traces of the scheduled steps, per rank.
    const profiler = (cfg as Record<string, unknown>).profiler as ComponentSection | null;
    const prof = profiler ? instantiate<ProfilerSettings>(profiler) : null;
    if (prof?.enabled) {
      const dir = prof.outputDir ?? join(cfg.output_dir, "profiling_outputs");
      this.profiler = new StepProfiler(prof, rt.backend, rt.rank, dir);
    }
    const validation = task.validation;
    this.loop = new TrainLoop({
      rt,
      keys: cfg,
      progress,
      stepsPerEpoch: perEpoch,
      log: this.log,
      hooks: this.hooks,
      save: (dirName, p) => this.save(dirName, p),
      validate: validation ? () => calls.score(validation) : null,
      launch: this.opts.launch,
    });
  }

  /** The training loop (every rank runs it in lockstep); returns this run's steps' metrics. */
  async train(): Promise<StepMetrics[]> {
    const { cfg, loop, trainable } = this;
    const ga = cfg.gradient_accumulation_steps;
    for await (const at of loop.positions()) {
      this.profiler?.beforeStep();
      const step = loop.progress.step;
      const lr = this.scheduler ? this.scheduler.lrAt(step) : this.optimizer.options.lr;
      trainable.zeroGrads();
      trainable.beginStep(lr); // optimizer_in_bwd: the backward steps each group
      const { loss, tokens, metrics } = await this.head.step(at.epoch, at.step, ga);
      loop.check(loss, "loss");
      const gradNorm = await trainable.clip(cfg.clip_grad_norm ?? Infinity);
      loop.check(gradNorm, "gradient norm");
      await trainable.step(lr);
      this.profiler?.afterStep();
      await loop.endStep(at, { loss, tokens, metrics, gradNorm, lr });
    }
    return loop.steps;
  }

  /**
   * Save `dirName` (every rank calls it; rank 0 writes): the model, or under LoRA the PEFT
   * adapter and the merged model unless save_adapter_weights_only; and the recipe state.
   * Returns the directory.
   */
  async save(dirName: string, progress: TrainingProgress): Promise<string> {
    const dir = await this.trainable.save((moments) =>
      saveTrainingCheckpoint({
        checkpointer: this.checkpointer,
        model: this.model,
        optimizer: this.optimizer,
        progress,
        dirName,
        adapterOnly: this.cfg.save_adapter_weights_only ?? false,
        moments,
        extra: { batch: batchRecord(this.cfg, this.rt.worldSize) },
      })
    );
    return dir ?? join(String(this.cfg.checkpointer.output_dir), dirName);
  }

  /**
   * End the run: rank 0's loss curve and summary (and, after Ctrl-C, the line naming the
   * checkpoint and the resume command), then leave the group and free all but the model.
   * Returns the loss curve's path (rank 0).
   */
  async cleanup(): Promise<string | null> {
    this.profiler?.close();
    if (this.rt.isMain && this.profiler?.written.length && !this.hooks.quiet) {
      console.error(`profile: ${this.profiler.written.join(", ")}`);
    }
    const last = this.loop.lastCheckpoint;
    const curve = this.log?.finish(last ? [`checkpoint: ${last}`] : []) ?? null;
    if (this.rt.isMain && this.loop.interrupted) console.error(this.loop.interruptLine());
    await this.rt.group.barrier();
    await this.rt.group.close();
    this.head.free();
    this.trainable.free();
    return curve;
  }
}

/** Set up, train and clean up in this process; the trained model stays for the caller. */
export async function runFinetune(
  cfg: RecipeKeys,
  opts: RecipeOptions,
): Promise<FinetuneResult & { exitCode: number }> {
  const recipe = new FinetuneRecipe(cfg, opts);
  await recipe.setup();
  const steps = await recipe.train();
  const lossCurvePath = await recipe.cleanup();
  return {
    outputDir: cfg.output_dir,
    metricsPath: join(cfg.output_dir, "metrics.jsonl"),
    lossCurvePath: lossCurvePath ?? join(cfg.output_dir, "loss_curve.svg"),
    checkpointDir: recipe.loop.lastCheckpoint,
    steps,
    model: recipe.model,
    tokenizer: recipe.tokenizer,
    seed: recipe.seed,
    exitCode: recipe.loop.exitCode,
  };
}

/** The recipe's name as launched (a copied file runs under its path), for the progress line. */
export function launchedName(launch: LaunchOptions, fallback: string): string {
  return launch.recipeArgv[0] ?? fallback;
}

/**
 * The in-process runner of the `method` entry `name` (the demos call these): the recipe run
 * with `hooks`, returning what it produced.
 */
export function finetuneRunner<C extends RecipeKeys>(
  name: string,
  method: "full" | "lora",
): (cfg: C, launch: LaunchOptions, hooks?: FinetuneHooks) => Promise<FinetuneResult> {
  return async (cfg, launch, hooks = {}) => await runFinetune(cfg, { name, method, launch, hooks });
}

/** The `main` of an entry point: run the recipe on this rank; exit 130/143 after a stop request. */
export function finetuneMain(
  method?: "full" | "lora",
): (cfg: RecipeKeys, launch: LaunchOptions) => Promise<void> {
  return async (cfg, launch) => {
    const name = launchedName(launch, "finetune");
    const r = await runFinetune(cfg, { name, method, launch });
    r.model.free();
    if (r.exitCode) Deno.exit(r.exitCode);
  };
}

/** Run the recipe on this rank (full or LoRA, by the model builder). */
export const main = finetuneMain();

/** The builder must train what the entry point promises: every weight, or LoRA adapters. */
function checkMethod(spec: ModelSpec, section: ComponentSection, o: RecipeOptions): void {
  const name = section._component_;
  if (o.method === "lora" && !spec.lora) {
    throw new TuneError(
      `model ${name} has no LoRA adapters; use a lora_* builder or the ${
        o.name.replace("lora_", "full_")
      } recipe`,
    );
  }
  if (o.method === "full" && spec.lora) {
    throw new TuneError(
      `model ${name} has LoRA adapters; use a builder without lora_ or the ${
        o.name.replace("full_", "lora_")
      } recipe`,
    );
  }
}
