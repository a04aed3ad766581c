/**
 * A one-line progress bar on stderr, redrawn in place when stderr is a terminal and
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
