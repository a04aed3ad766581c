/**
 * `torchtune.training.setup_torch_profiler`: the `profiler` section of torchtune's configs,
 * with torch.profiler's schedule. Of the steps a run trains, each cycle skips `wait_steps`,
 * runs `warmup_steps` traced but discarded, then traces `active_steps`; `num_cycles` cycles.
 *
 * What a traced step records (there is no torch.profiler here; these are tune's own ops):
 * - `cpu`: every op call on the backend (the op interface of src/backend/ops.ts) with its
 *   host time, as Chrome trace events (`rank<R>_cycle<C>_trace.json`, opens in Perfetto or
 *   chrome://tracing) and a table of time per op (`rank<R>_cycle<C>_ops.txt`);
 * - `cuda`: on the CUDA backend, its per-kernel GPU profile (CUDA events around every
 *   launch) in `rank<R>_cycle<C>_gpu.json`; nothing on the CPU backend;
 * - `record_shapes`: each op's numeric arguments and buffer lengths in the event's args;
 * - `with_stack`: the caller's stack (a few frames) in the event's args;
 * - `profile_memory`: the process's resident memory as a counter track at each op.
 * `with_flops` has no counterpart and is refused when true.
 */
import type { Backend } from "../backend/ops.ts";
import type { ProfileRow } from "../backend/cuda/profile.ts";
import { atomicWrite } from "../checkpoint/atomic_write.ts";
import { registerComponent } from "../config/registry.ts";
import { TuneError } from "../errors.ts";

/** The section's settings, as the builder returns them. */
export interface ProfilerSettings {
  enabled: boolean;
  cpu: boolean;
  cuda: boolean;
  profileMemory: boolean;
  withStack: boolean;
  recordShapes: boolean;
  waitSteps: number;
  warmupSteps: number;
  activeSteps: number;
  numCycles: number;
  outputDir: string | null;
}

export const torchProfilerComponent = registerComponent<ProfilerSettings>({
  name: "torchtune.training.setup_torch_profiler",
  aliases: ["setup_torch_profiler"],
  kind: "profiler",
  doc: "per-op traces of scheduled training steps (see src/training/profiler.ts)",
  params: {
    enabled: { type: "bool", default: false, doc: "trace steps at all" },
    cpu: { type: "bool", default: true, doc: "trace every backend op call (host time)" },
    cuda: { type: "bool", default: true, doc: "the CUDA backend's per-kernel GPU times" },
    profile_memory: { type: "bool", default: false, doc: "resident memory as a counter track" },
    with_stack: { type: "bool", default: false, doc: "each op's calling stack in its event" },
    record_shapes: { type: "bool", default: true, doc: "each op's sizes in its event" },
    with_flops: { type: "bool", default: false, doc: "only False: no flop counts" },
    wait_steps: { type: "int", default: 5, bound: { min: 0 }, doc: "steps skipped per cycle" },
    warmup_steps: {
      type: "int",
      default: 3,
      bound: { min: 0 },
      doc: "steps traced and discarded per cycle",
    },
    active_steps: { type: "int", default: 2, bound: { min: 1 }, doc: "steps traced per cycle" },
    num_cycles: { type: "int", default: 1, bound: { min: 1 }, doc: "cycles of the schedule" },
    output_dir: { type: "string", default: null, doc: "where traces go (null: output_dir)" },
  },
  build(args) {
    if (args.with_flops) {
      throw new TuneError(
        "profiler.with_flops=True is not supported (tune's traces have no flop counts); " +
          "set profiler.with_flops=False",
      );
    }
    return {
      enabled: args.enabled as boolean,
      cpu: args.cpu as boolean,
      cuda: args.cuda as boolean,
      profileMemory: args.profile_memory as boolean,
      withStack: args.with_stack as boolean,
      recordShapes: args.record_shapes as boolean,
      waitSteps: args.wait_steps as number,
      warmupSteps: args.warmup_steps as number,
      activeSteps: args.active_steps as number,
      numCycles: args.num_cycles as number,
      outputDir: args.output_dir as string | null,
    };
  },
});

/** One Chrome trace event ("X": a span; "C": a counter). */
interface TraceEvent {
  name: string;
  ph: "X" | "C";
  ts: number; // µs since the profiler started
  dur?: number; // µs
  pid: number;
  tid: number;
  args?: Record<string, unknown>;
}

type ProfiledBackend = Backend & {
  startProfile?: () => void;
  stopProfile?: () => ProfileRow[];
};

/** Runs the schedule over a run's steps; `beforeStep`/`afterStep` around each. */
export class StepProfiler {
  #k = 0; // steps seen by the profiler
  #events: TraceEvent[] = [];
  #installed: string[] = [];
  #t0 = performance.now();
  /** Files written so far. */
  readonly written: string[] = [];

  constructor(
    readonly settings: ProfilerSettings,
    readonly backend: Backend,
    readonly rank: number,
    readonly outputDir: string,
  ) {}

  get #cycleLength(): number {
    const s = this.settings;
    return s.waitSteps + s.warmupSteps + s.activeSteps;
  }

  /** Where step `k` of the profiler falls: off, warmup or active (and its cycle). */
  #phase(k: number): { phase: "off" | "warmup" | "active"; cycle: number; last: boolean } {
    const s = this.settings;
    const cycle = Math.floor(k / this.#cycleLength);
    if (!s.enabled || cycle >= s.numCycles) return { phase: "off", cycle, last: false };
    const i = k % this.#cycleLength;
    if (i < s.waitSteps) return { phase: "off", cycle, last: false };
    if (i < s.waitSteps + s.warmupSteps) return { phase: "warmup", cycle, last: false };
    return { phase: "active", cycle, last: i === this.#cycleLength - 1 };
  }

  /** Before a training step: trace it if the schedule says so. */
  beforeStep(): void {
    const { phase } = this.#phase(this.#k);
    if (phase === "off") return;
    if (this.#installed.length === 0) this.#install();
    if (phase === "active" && this.#phase(this.#k - 1).phase !== "active") {
      this.#events = [];
      if (this.settings.cuda) (this.backend as ProfiledBackend).startProfile?.();
    }
  }

  /** After a training step: at the end of a cycle's active steps, write its trace. */
  afterStep(): void {
    const { phase, cycle, last } = this.#phase(this.#k);
    this.#k++;
    if (phase === "warmup") this.#events = [];
    if (phase === "active" && last) {
      this.#uninstall();
      this.#write(cycle);
    }
  }

  /** Stop tracing (the run ended inside a window: what was traced is written). */
  close(): void {
    const { phase, cycle } = this.#phase(Math.max(0, this.#k - 1));
    const open = this.#installed.length > 0;
    this.#uninstall();
    if (open && phase === "active") this.#write(cycle);
  }

  #install(): void {
    const be = this.backend as unknown as Record<string, unknown>;
    const names = new Set<string>();
    for (
      let p = Object.getPrototypeOf(be);
      p && p !== Object.prototype;
      p = Object.getPrototypeOf(p)
    ) {
      for (const n of Object.getOwnPropertyNames(p)) {
        if (n !== "constructor" && typeof be[n] === "function") names.add(n);
      }
    }
    for (const name of names) {
      if (Object.hasOwn(be, name) || name === "startProfile" || name === "stopProfile") continue;
      const original = be[name] as (...a: unknown[]) => unknown;
      be[name] = (...args: unknown[]) => {
        const start = performance.now();
        const out = original.apply(be, args);
        if (out instanceof Promise) {
          return out.then((v) => {
            this.#record(name, start, args);
            return v;
          });
        }
        this.#record(name, start, args);
        return out;
      };
      this.#installed.push(name);
    }
  }

  #uninstall(): void {
    const be = this.backend as unknown as Record<string, unknown>;
    for (const name of this.#installed) delete be[name];
    this.#installed = [];
  }

  #record(name: string, start: number, args: unknown[]): void {
    const s = this.settings;
    if (!s.cpu) return;
    const end = performance.now();
    const ev: TraceEvent = {
      name,
      ph: "X",
      ts: (start - this.#t0) * 1000,
      dur: (end - start) * 1000,
      pid: this.rank,
      tid: 0,
    };
    const extra: Record<string, unknown> = {};
    if (s.recordShapes) extra.sizes = args.map(sizeOf).filter((x) => x !== null);
    if (s.withStack) extra.stack = new Error().stack?.split("\n").slice(3, 8).map((l) => l.trim());
    if (Object.keys(extra).length) ev.args = extra;
    this.#events.push(ev);
    if (s.profileMemory) {
      this.#events.push({
        name: "resident memory (MB)",
        ph: "C",
        ts: ev.ts,
        pid: this.rank,
        tid: 0,
        args: { rss: Math.round(Deno.memoryUsage().rss / 2 ** 20) },
      });
    }
  }

  #write(cycle: number): void {
    const base = `${this.outputDir}/rank${this.rank}_cycle${cycle}`;
    Deno.mkdirSync(this.outputDir, { recursive: true });
    if (this.settings.cpu) {
      atomicWrite(`${base}_trace.json`, JSON.stringify({ traceEvents: this.#events }));
      atomicWrite(`${base}_ops.txt`, opsTable(this.#events));
      this.written.push(`${base}_trace.json`, `${base}_ops.txt`);
    }
    const gpu = this.settings.cuda ? (this.backend as ProfiledBackend).stopProfile?.() : undefined;
    if (gpu) {
      atomicWrite(`${base}_gpu.json`, JSON.stringify(gpu, null, 1));
      this.written.push(`${base}_gpu.json`);
    }
    this.#events = [];
  }
}

/** A buffer's element count or a plain number, for `record_shapes`. */
function sizeOf(a: unknown): number | string | null {
  if (typeof a === "number") return a;
  if (typeof a === "object" && a !== null && "length" in a) {
    const n = (a as { length: unknown }).length;
    if (typeof n === "number") return `[${n}]`;
  }
  return null;
}

/** Time per op name, largest first: calls, total ms, share. */
export function opsTable(events: readonly TraceEvent[]): string {
  const totals = new Map<string, { n: number; us: number }>();
  let all = 0;
  for (const e of events) {
    if (e.ph !== "X") continue;
    const t = totals.get(e.name) ?? { n: 0, us: 0 };
    t.n++;
    t.us += e.dur!;
    all += e.dur!;
    totals.set(e.name, t);
  }
  const rows = [...totals].sort((a, b) => b[1].us - a[1].us);
  const lines = [`${"op".padEnd(32)} ${"calls".padStart(7)} ${"ms".padStart(10)}  share`];
  for (const [name, t] of rows) {
    lines.push(
      `${name.padEnd(32)} ${String(t.n).padStart(7)} ${(t.us / 1000).toFixed(3).padStart(10)}  ${
        (100 * t.us / Math.max(all, 1e-9)).toFixed(1)
      }%`,
    );
  }
  return lines.join("\n") + "\n";
}
