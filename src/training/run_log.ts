/**
 * What a training run reports: one JSON record per optimizer step in
 * `<output_dir>/metrics.jsonl` (always), the configured metric logger every
 * `log_every_n_steps`, a progress line on stderr (step, epoch, loss, lr, tokens/s, elapsed,
 * ETA), and at the end
 * `<output_dir>/loss_curve.svg` plus a short summary on stdout.
 */
import { join } from "node:path";
import { atomicWrite } from "../checkpoint/atomic_write.ts";
import { lossCurveSvg } from "./loss_plot.ts";
import { type MetricLogger, readMetrics } from "./metric_logging.ts";
import { StepProgress } from "./progress.ts";
import { logs } from "../config/run_keys.ts";

/** The numbers of one optimizer step. */
export interface StepMetrics {
  /** 1-based optimizer step over the whole run. */
  step: number;
  epoch: number;
  /** Mean token loss of the step (all its micro-batches). */
  loss: number;
  lr: number;
  /** Gradient L2 norm before clipping. */
  grad_norm: number;
  /** Loss-counted tokens in the step. */
  tokens: number;
  tokens_per_s: number;
  /** Recipe-specific numbers (a preference recipe's rewards/chosen, ...). */
  [metric: string]: number;
}

/** Options of `RunLog`. */
export interface RunLogOptions {
  /** Recipe name, for the progress bar and the summary. */
  label: string;
  /** Optimizer steps of the whole run (for the bar). */
  totalSteps: number;
  /** Configured metric logger (null: none besides metrics.jsonl). */
  logger: MetricLogger | null;
  logEveryNSteps: number;
  /** Epochs of the whole run (for the progress line; default 1). */
  epochs?: number;
  /** When resuming: records after this step are dropped from metrics.jsonl (they are redone). */
  resumedAtStep?: number;
  /** No progress bar or summary (callers that print their own). */
  quiet?: boolean;
}

/** Per-step records, progress and the end-of-run outputs of one training run. */
export class RunLog {
  /** `<output_dir>/metrics.jsonl`. */
  readonly metricsPath: string;
  readonly #bar: StepProgress | null;
  readonly #enc = new TextEncoder();
  #first: StepMetrics | null = null;
  #last: StepMetrics | null = null;
  #tokens = 0;
  #seconds = 0;

  constructor(readonly outputDir: string, readonly options: RunLogOptions) {
    Deno.mkdirSync(outputDir, { recursive: true });
    this.metricsPath = join(outputDir, "metrics.jsonl");
    const at = options.resumedAtStep;
    if (at !== undefined) {
      // Keep the records up to the checkpoint; the steps after it run again.
      let kept = "";
      try {
        kept = readMetrics(this.metricsPath).filter((r) => r.step <= at)
          .map((r) => JSON.stringify(r) + "\n").join("");
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
      atomicWrite(this.metricsPath, kept);
    } else {
      atomicWrite(this.metricsPath, "");
    }
    this.#bar = options.quiet ? null : new StepProgress(
      options.label,
      options.totalSteps,
      options.logEveryNSteps,
      options.epochs ?? 1,
    );
  }

  /** Record one optimizer step (`seconds`: its wall time, for the summary). */
  step(m: StepMetrics, seconds: number): void {
    this.#first ??= m;
    this.#last = m;
    this.#tokens += m.tokens;
    this.#seconds += seconds;
    const line = JSON.stringify(m) + "\n";
    Deno.writeFileSync(this.metricsPath, this.#enc.encode(line), { append: true });
    if (this.options.logger && m.step % this.options.logEveryNSteps === 0) {
      const { step: _s, ...rest } = m;
      this.options.logger.logDict(rest, m.step);
    }
    this.#bar?.update({
      step: m.step,
      epoch: m.epoch,
      loss: m.loss,
      lr: m.lr,
      tokensPerSecond: m.tokens_per_s,
      // online RL (GRPO) runs: the mean reward and success rate of the step's completions
      reward: m.reward,
      success: m.success_rate,
    });
  }

  /** Note a saved checkpoint (a line of its own below the bar). */
  saved(dir: string): void {
    if (this.options.quiet || !logs("INFO")) return; // a setup line (log_level INFO and below)
    this.#bar?.finish();
    console.error(`saved ${dir}`);
  }

  /** End the bar; write loss_curve.svg from all of metrics.jsonl; print the summary. */
  finish(lines: string[] = []): string {
    this.#bar?.finish();
    this.options.logger?.close();
    const points = readMetrics(this.metricsPath).map((r) => ({
      step: r.step,
      loss: r.loss,
      val_loss: r.val_loss,
    }));
    const svgPath = join(this.outputDir, "loss_curve.svg");
    atomicWrite(svgPath, lossCurveSvg(points, `${this.options.label}: training loss`));
    if (!this.options.quiet) {
      const f = this.#first, l = this.#last;
      const tps = this.#seconds > 0 ? this.#tokens / this.#seconds : 0;
      console.log(
        `${this.options.label}: ${l ? l.step - f!.step + 1 : 0} steps, ${this.#tokens} tokens ` +
          `in ${this.#seconds.toFixed(1)} s (${tps.toFixed(0)} tokens/s)`,
      );
      if (f && l) {
        console.log(
          `loss ${f.loss.toFixed(4)} (step ${f.step}) -> ${l.loss.toFixed(4)} (step ${l.step})`,
        );
      }
      for (const line of lines) console.log(line);
      console.log(`metrics: ${this.metricsPath}; loss curve: ${svgPath}`);
    }
    return svgPath;
  }
}
