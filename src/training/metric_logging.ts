/**
 * Metric loggers (torchtune's training.metric_logging): where a recipe's loss, learning
 * rate and throughput go. `StdoutLogger` prints one line per step; `DiskLogger` appends one
 * JSON object per step to `<log_dir>/metrics.jsonl`, which a user or a test can read back.
 */

/** A scalar metric value. */
export type MetricValue = number;

/** What every metric logger does. */
export interface MetricLogger {
  /** Log one named value at a step. */
  log(name: string, value: MetricValue, step: number): void;
  /** Log several values at one step (one line / one JSON record). */
  logDict(metrics: Record<string, MetricValue>, step: number): void;
  /** Log the resolved config once, at the start of a run. */
  logConfig(config: Record<string, unknown>): void;
  /** Flush and release files. */
  close(): void;
}

/** Format a metric for humans: integers as is, others with 6 significant digits. */
export function formatMetric(value: MetricValue): string {
  return Number.isInteger(value) ? String(value) : value.toPrecision(6);
}

/** Prints `Step 3 | loss:2.34512 lr:0.0003` lines to stdout. */
export class StdoutLogger implements MetricLogger {
  log(name: string, value: MetricValue, step: number): void {
    this.logDict({ [name]: value }, step);
  }

  logDict(metrics: Record<string, MetricValue>, step: number): void {
    const parts = Object.entries(metrics).map(([k, v]) => `${k}:${formatMetric(v)}`);
    console.log(`Step ${step} | ${parts.join(" ")}`);
  }

  logConfig(_config: Record<string, unknown>): void {
    // The CLI already prints where the config came from; stdout stays for metrics.
  }

  close(): void {}
}

/**
 * Appends `{"step": n, "<name>": value, ...}` lines to `<log_dir>/metrics.jsonl` (creating
 * the directory), and writes the resolved config once to `<log_dir>/config.json`. Each
 * line is written whole with one append, so a reader never sees half a record.
 */
export class DiskLogger implements MetricLogger {
  /** The JSONL file metrics go to. */
  readonly path: string;
  private readonly encoder = new TextEncoder();

  constructor(readonly logDir: string) {
    Deno.mkdirSync(logDir, { recursive: true });
    this.path = `${logDir.replace(/\/+$/, "")}/metrics.jsonl`;
  }

  log(name: string, value: MetricValue, step: number): void {
    this.logDict({ [name]: value }, step);
  }

  logDict(metrics: Record<string, MetricValue>, step: number): void {
    const line = JSON.stringify({ step, ...metrics }) + "\n";
    Deno.writeFileSync(this.path, this.encoder.encode(line), { append: true });
  }

  logConfig(config: Record<string, unknown>): void {
    const target = `${this.logDir.replace(/\/+$/, "")}/config.json`;
    const tmp = `${target}.tmp`;
    Deno.writeTextFileSync(tmp, JSON.stringify(config, null, 2) + "\n");
    Deno.renameSync(tmp, target);
  }

  close(): void {}
}

/** Read back a `metrics.jsonl` file: one record per line. */
export function readMetrics(path: string): Array<Record<string, number>> {
  return Deno.readTextFileSync(path).split("\n").filter((l) => l.trim() !== "").map((l) =>
    JSON.parse(l)
  );
}
