/**
 * Progress on stderr: `ProgressBar`, a one-line bar, redrawn in place when stderr is a terminal and
 * printed as plain lines every `logEvery` steps otherwise (CI logs, pipes).
 */

const encoder = new TextEncoder();

/** Progress of a loop of `total` steps with free-form metrics. */
export class ProgressBar {
  private readonly tty = Deno.stderr.isTerminal();
  private lastLine = "";

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly logEvery = 1,
  ) {}

  /** Show step `done` of total with the given metrics (already formatted). */
  update(done: number, metrics: Record<string, string>): void {
    const frac = this.total > 0 ? Math.min(1, done / this.total) : 1;
    const width = 24;
    const filled = Math.round(frac * width);
    const bar = "#".repeat(filled) + "-".repeat(width - filled);
    const text = Object.entries(metrics).map(([k, v]) => `${k}=${v}`).join(" ");
    const line = `${this.label} [${bar}] ${done}/${this.total} ${text}`;
    if (this.tty) {
      Deno.stderr.writeSync(encoder.encode(`\r\x1b[2K${line}`));
      this.lastLine = line;
    } else if (done % this.logEvery === 0 || done === this.total) {
      Deno.stderr.writeSync(encoder.encode(line + "\n"));
    }
  }

  /** End the bar (moves to a fresh line on a terminal). */
  finish(): void {
    if (this.tty && this.lastLine) Deno.stderr.writeSync(encoder.encode("\n"));
    this.lastLine = "";
  }
}

/** What the line shows of one step. */
export interface ProgressStep {
  /** 1-based optimizer step over the whole run. */
  step: number;
  /** 0-based epoch of the step. */
  epoch: number;
  loss: number;
  lr: number;
  tokensPerSecond: number;
  /** Online RL: the step's mean reward and success rate (shown when given). */
  reward?: number;
  success?: number;
}

/**
 * The training progress line on stderr: step/total, epoch, loss, lr, tokens/s, elapsed time
 * and ETA; redrawn in place on a terminal, else one plain line every `logEvery` steps (and
 * at the last step).
 */
export class StepProgress {
  private readonly tty = Deno.stderr.isTerminal();
  private lastLine = "";
  private readonly started = performance.now();
  private firstStep: number | null = null;

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly logEvery = 1,
    private readonly epochs = 1,
  ) {}

  /** Show step `s` (elapsed and ETA count from this bar's creation, i.e. this process's run). */
  update(s: ProgressStep): void {
    this.firstStep ??= s.step - 1;
    const elapsed = (performance.now() - this.started) / 1000;
    const doneHere = s.step - this.firstStep;
    const eta = doneHere > 0 ? (elapsed / doneHere) * Math.max(0, this.total - s.step) : 0;
    const frac = this.total > 0 ? Math.min(1, s.step / this.total) : 1;
    const filled = Math.round(frac * 24);
    const bar = "#".repeat(filled) + "-".repeat(24 - filled);
    const rl = (s.reward === undefined ? "" : `reward=${s.reward.toFixed(3)} `) +
      (s.success === undefined ? "" : `success=${s.success.toFixed(2)} `);
    const line = `${this.label} [${bar}] ${s.step}/${this.total} loss=${s.loss.toFixed(4)} ${rl}` +
      `lr=${s.lr.toExponential(2)} tok/s=${s.tokensPerSecond.toFixed(0)} ` +
      `epoch=${s.epoch + 1}/${this.epochs} elapsed=${clock(elapsed)} eta=${clock(eta)}`;
    if (this.tty) {
      this.lastLine = line;
      Deno.stderr.writeSync(encoder.encode(`\r\x1b[2K${line}`));
    } else if (s.step % this.logEvery === 0 || s.step === this.total) {
      Deno.stderr.writeSync(encoder.encode(line + "\n"));
    }
  }

  /** End the bar (moves to a fresh line on a terminal). */
  finish(): void {
    if (this.tty && this.lastLine) Deno.stderr.writeSync(encoder.encode("\n"));
    this.lastLine = "";
  }
}

/** Seconds as m:ss or h:mm:ss. */
export function clock(seconds: number): string {
  const t = Math.round(seconds);
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = t % 60;
  const ss = String(s).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}
