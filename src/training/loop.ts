/**
 * The bookkeeping of every fine-tuning recipe's train loop, in one place so the recipes
 * cannot drift: where a (resumed) run starts, when it stops (epochs, max_steps_per_epoch,
 * stop_after_steps, Ctrl-C / SIGTERM agreed by all ranks), what each step records
 * (metrics.jsonl, progress, validation every run_val_every_n_steps) and when it saves
 * (each epoch end, every save_every_n_steps, and at a stop). The recipe keeps the loop
 * itself visible:
 *
 * ```ts
 * for await (const at of loop.positions()) {
 *   const lr = scheduler.lrAt(loop.progress.step);
 *   trainable.zeroGrads();
 *   trainable.beginStep(lr); // optimizer_in_bwd: the backward steps each group
 *   const out = await head.step(at.epoch, at.step, ga);
 *   loop.check(out.loss, "loss");
 *   const gradNorm = await trainable.clip(maxNorm);
 *   await trainable.step(lr);
 *   await loop.endStep(at, { ...out, gradNorm, lr });
 * }
 * ```
 */
import type { LaunchOptions } from "../config/recipe.ts";
import { checkFiniteLoss } from "./nan_guard.ts";
import type { TrainingProgress } from "./checkpointing.ts";
import { shellQuote, StopRequest } from "./interrupt.ts";
import { anyRank, type Runtime } from "./parallel.ts";
import type { FinetuneHooks, StepLoss } from "./recipe_api.ts";
import type { RunLog, StepMetrics } from "./run_log.ts";

/** The keys the loop reads (every fine-tuning recipe has them). */
export interface LoopKeys {
  epochs: number;
  stop_after_steps: number | null;
  gradient_accumulation_steps: number;
  save_every_n_steps: number | null;
  run_val_every_n_steps?: number | null;
}

/** One optimizer step to run: its epoch and its index in the epoch. */
export interface StepPosition {
  epoch: number;
  step: number;
  /** performance.now() when the step began. */
  startedAt: number;
}

/** What the loop is given. */
export interface LoopOptions {
  rt: Runtime;
  keys: LoopKeys;
  /** Where the run stands (restored on resume); the loop advances it. */
  progress: TrainingProgress;
  stepsPerEpoch: number;
  /** Rank 0's run log (null on the other ranks). */
  log: RunLog | null;
  hooks: FinetuneHooks;
  /** Write checkpoint `dirName` for `progress` (every rank calls it); returns its path. */
  save(dirName: string, progress: TrainingProgress): Promise<string>;
  /** The validation loss over all ranks (every rank calls it), or null when off. */
  validate: (() => Promise<number>) | null;
  /** The recipe and its arguments, for the resume command printed after Ctrl-C. */
  launch: LaunchOptions;
}

/** A recipe's train loop bookkeeping (see the module doc). */
export class TrainLoop {
  /** The metrics of every step this process ran. */
  readonly steps: StepMetrics[] = [];
  /** The last checkpoint written (or, resuming, null until one is). */
  lastCheckpoint: string | null = null;
  /** Ctrl-C / SIGTERM: a rank of a launched job also gets the launcher's SIGTERM. */
  readonly stopRequest: StopRequest;
  #stopped = false;
  #interrupted = false;

  constructor(readonly o: LoopOptions) {
    this.stopRequest = new StopRequest(o.rt.sharded ? 2000 : 0);
  }

  get progress(): TrainingProgress {
    return this.o.progress;
  }

  /**
   * The steps to run, from the resume point on; ends at the last epoch, at
   * stop_after_steps, or after the step during which a stop was requested. Listens for
   * SIGINT/SIGTERM while it runs.
   */
  async *positions(): AsyncGenerator<StepPosition> {
    const { keys, progress: p, stepsPerEpoch } = this.o;
    const ga = keys.gradient_accumulation_steps;
    const start = { epoch: p.epoch, step: Math.floor(p.dataPosition / ga) };
    await this.stopRequest.install();
    try {
      for (let epoch = start.epoch; epoch < keys.epochs; epoch++) {
        const first = epoch === start.epoch ? start.step : 0;
        for (let step = first; step < stepsPerEpoch; step++) {
          if (this.#stopped || this.#atStepLimit()) return;
          yield { epoch, step, startedAt: performance.now() };
        }
      }
    } finally {
      this.stopRequest.uninstall();
    }
  }

  /** A non-finite loss or gradient norm ends the run with one line naming the last checkpoint. */
  check(value: number, what: "loss" | "gradient norm"): void {
    const step = this.o.progress.step + 1;
    if (what === "loss") checkFiniteLoss(value, step, this.lastCheckpoint);
    else checkFiniteLoss(value, step, this.lastCheckpoint, what);
  }

  /**
   * After the optimizer step at `at`: advance the progress, record the metrics (with
   * val_loss when due), agree over ranks whether to stop, and save when due.
   */
  async endStep(
    at: StepPosition,
    out: StepLoss & { gradNorm: number; lr: number },
  ): Promise<void> {
    const { keys, progress: p, log, hooks } = this.o;
    p.step++;
    p.epoch = at.epoch;
    p.dataPosition = (at.step + 1) * keys.gradient_accumulation_steps;
    const seconds = (performance.now() - at.startedAt) / 1000;
    const m: StepMetrics = {
      step: p.step,
      epoch: at.epoch,
      loss: out.loss,
      lr: out.lr,
      grad_norm: out.gradNorm,
      tokens: out.tokens,
      tokens_per_s: out.tokens / Math.max(seconds, 1e-9),
      ...out.metrics,
    };
    const every = keys.run_val_every_n_steps ?? null;
    if (this.o.validate && every !== null && p.step % every === 0) {
      m.val_loss = await this.o.validate();
    }
    log?.step(m, seconds);
    hooks.onStep?.(m);
    this.steps.push(m);
    // every rank stops after the same step, whichever received the signal
    const interrupted = await anyRank(this.o.rt, () => this.stopRequest.signal !== null);
    const endOfEpoch = at.step === this.o.stepsPerEpoch - 1;
    const atLimit = this.#atStepLimit();
    const periodic = keys.save_every_n_steps !== null && p.step % keys.save_every_n_steps === 0;
    if (endOfEpoch) {
      await this.#save(`epoch_${at.epoch}`, { ...p, epoch: at.epoch + 1, dataPosition: 0 });
    } else if (atLimit || interrupted || periodic) {
      await this.#save(`step_${p.step}`, p);
    }
    if (atLimit || interrupted) this.#stopped = true;
    if (interrupted) this.#interrupted = true;
  }

  /** Whether a stop request ended the run (then `exitCode` is 130 or 143). */
  get interrupted(): boolean {
    return this.#interrupted;
  }

  /** The exit status for the run: 0, or 130 (SIGINT) / 143 (SIGTERM) after a stop request. */
  get exitCode(): number {
    if (!this.#interrupted) return 0;
    return this.stopRequest.exitCode || 130;
  }

  /** The one line rank 0 prints after a stop request: the checkpoint and how to resume. */
  interruptLine(): string {
    return `tune: interrupted after step ${this.o.progress.step}; saved ${this.lastCheckpoint}; ` +
      `resume with: ${resumeCommand(this.o.launch)}`;
  }

  #atStepLimit(): boolean {
    const limit = this.o.keys.stop_after_steps;
    return limit !== null && this.o.progress.step >= limit;
  }

  async #save(dirName: string, progress: TrainingProgress): Promise<void> {
    const dir = await this.o.save(dirName, progress);
    this.lastCheckpoint = dir;
    if (this.o.rt.isMain) {
      this.o.log?.saved(dir);
      this.o.hooks.onSave?.(dir);
    }
  }
}

/** The command that resumes this run: its own command line with resume_from_checkpoint=True. */
export function resumeCommand(launch: LaunchOptions): string {
  const exe = Deno.execPath();
  const tune = /(^|\/)deno(\.exe)?$/.test(exe) ? "deno task tune" : exe;
  const flags = launch.explicit
    ? [
      ...(launch.nnodes > 1 ? ["--nnodes", String(launch.nnodes)] : []),
      "--nproc_per_node",
      String(launch.nprocPerNode),
    ]
    : [];
  const args = launch.recipeArgv.filter((a) => !/^resume_from_checkpoint=/.test(a));
  const words = ["run", ...flags, ...args, "resume_from_checkpoint=True"].map(shellQuote);
  return [tune === "deno task tune" ? tune : shellQuote(tune), ...words].join(" ");
}
