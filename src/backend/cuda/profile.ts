/**
 * A per-op GPU profiler for the CUDA backend. While it runs, every kernel launch, cuBLASLt
 * matmul, memset and device copy is bracketed by two CUDA events on the backend's stream
 * (events come from a pool reused across profiles); the elapsed times are read only when
 * the profile stops (one synchronization), or when the pending ops reach FLUSH_OPS (then
 * they are resolved and folded into the totals so memory stays bounded).
 *
 * The report: per op name (kernel name; "gemm MxNxK ..." for matmuls) the count, total GPU
 * ms, share of the GPU busy time and, for matmuls, achieved TFLOP/s; plus the host wall
 * time of the profiled interval, so launch overhead and host stalls show as wall minus
 * GPU busy, and the host's waits on the GPU (syncs, synchronous copies) by cause.
 *
 * Enable with `backend.startProfile()` / `backend.stopProfile()`, or for a whole process
 * with TUNE_CUDA_PROFILE=1 (the table goes to stderr when the process ends).
 */
import { check, cuda, type CudaLib, handleOf } from "../../../ffi/cuda.ts";

/** What kind of GPU work a row is. */
export type ProfileKind = "kernel" | "gemm" | "memset" | "memcpy";

/** One op name's totals. */
export interface ProfileRow {
  /** Kernel name, or "gemm MxNxK a->c TN (fwd)" (cuBLASLt's column-major m, n, k). */
  name: string;
  kind: ProfileKind;
  /** Launches of this name. */
  count: number;
  /** GPU milliseconds, summed over the launches. */
  totalMs: number;
  /** totalMs / the GPU busy time of the whole profile (0..1). */
  share: number;
  /** Mean microseconds per launch. */
  avgUs: number;
  /** Floating-point operations of all launches (matmuls: 2·m·n·k·batch; else 0). */
  flops: number;
  /** Achieved TFLOP/s (matmuls only; null for the others). */
  tflops: number | null;
}

/** Time the host spent blocked on the GPU, by cause. */
export interface HostWait {
  /** Where the host waited, e.g. "sync: crossEntropy targets". */
  name: string;
  count: number;
  /** Host milliseconds blocked. */
  ms: number;
}

/** A finished profile. */
export interface ProfileReport {
  /** One row per op name, largest totalMs first. */
  rows: ProfileRow[];
  /** Host milliseconds from start to stop (stop waits for the GPU first). */
  wallMs: number;
  /** Sum of the GPU time of every op (ops on one stream never overlap). */
  gpuBusyMs: number;
  /** GPU time from the first op's start to the last op's end (0 with no ops). */
  gpuSpanMs: number;
  /** Ops recorded. */
  ops: number;
  /** Host waits on the GPU during the profile. */
  hostWaits: HostWait[];
  /**
   * Bytes the caching allocator newly took from the driver (cuMemAlloc) during the
   * profile (set by the backend; 0: every buffer came from its cache).
   */
  newDeviceBytes?: number;
}

/** Pending ops resolved (one sync) and folded into the totals beyond this many. */
export const FLUSH_OPS = 50_000;

interface Totals {
  kind: ProfileKind;
  count: number;
  ms: number;
  flops: number;
}

/**
 * Pure aggregation of timed ops into rows (kept apart from the events so it can be
 * tested without a GPU).
 */
export class ProfileTotals {
  private readonly byName = new Map<string, Totals>();
  private readonly waits = new Map<string, { count: number; ms: number }>();
  /** Ops added. */
  ops = 0;

  /** Add one op of `ms` GPU milliseconds. */
  add(name: string, kind: ProfileKind, ms: number, flops: number): void {
    let t = this.byName.get(name);
    if (t === undefined) {
      t = { kind, count: 0, ms: 0, flops: 0 };
      this.byName.set(name, t);
    }
    t.count++;
    t.ms += ms;
    t.flops += flops;
    this.ops++;
  }

  /** Add one host wait of `ms` host milliseconds. */
  addWait(name: string, ms: number): void {
    const w = this.waits.get(name) ?? { count: 0, ms: 0 };
    w.count++;
    w.ms += ms;
    this.waits.set(name, w);
  }

  /** The rows (largest total first) and the busy time they sum to. */
  rows(): { rows: ProfileRow[]; busyMs: number } {
    let busyMs = 0;
    for (const t of this.byName.values()) busyMs += t.ms;
    const rows: ProfileRow[] = [];
    for (const [name, t] of this.byName) {
      rows.push({
        name,
        kind: t.kind,
        count: t.count,
        totalMs: t.ms,
        share: busyMs > 0 ? t.ms / busyMs : 0,
        avgUs: (1000 * t.ms) / t.count,
        flops: t.flops,
        tflops: t.kind === "gemm" && t.ms > 0 ? t.flops / (t.ms * 1e9) : null,
      });
    }
    rows.sort((a, b) => b.totalMs - a.totalMs || a.name.localeCompare(b.name));
    return { rows, busyMs };
  }

  /** The host waits, longest first. */
  hostWaits(): HostWait[] {
    return [...this.waits].map(([name, w]) => ({ name, ...w }))
      .sort((a, b) => b.ms - a.ms || a.name.localeCompare(b.name));
  }
}

/** Events around the ops of one stream; see the module comment. */
export class GpuProfiler {
  private readonly lib: CudaLib;
  private readonly elapsed: NonNullable<CudaLib["cuEventElapsedTime"]>;
  private readonly pool: Deno.PointerValue[] = [];
  private readonly slot = new BigUint64Array(1);
  private readonly ms = new Float32Array(1);
  // pending ops: names, kinds, flops and the pool index of their start event (end = +1)
  private names: string[] = [];
  private kinds: ProfileKind[] = [];
  private flops: number[] = [];
  private starts: number[] = [];
  private used = 0;
  private totals = new ProfileTotals();
  private spanMs = 0;
  private wallStart = 0;
  /** True between start() and stop(). */
  active = false;

  constructor(private readonly stream: Deno.PointerValue) {
    this.lib = cuda();
    const e = this.lib.cuEventElapsedTime_v2 ?? this.lib.cuEventElapsedTime;
    if (e === null) throw new Error("the driver exports no cuEventElapsedTime");
    this.elapsed = e;
  }

  /** Events created so far (the pool only grows to the most ops pending at once, x2). */
  get poolSize(): number {
    return this.pool.length;
  }

  /** Forget earlier totals and start timing. */
  start(): void {
    this.totals = new ProfileTotals();
    this.names = [];
    this.kinds = [];
    this.flops = [];
    this.starts = [];
    this.used = 0;
    this.spanMs = 0;
    this.active = true;
    this.wallStart = performance.now();
  }

  /** Record the start event of an op; pass the result to `after`. */
  before(): number {
    const i = this.used;
    this.used += 2;
    while (this.pool.length < this.used) {
      check("cuEventCreate", this.lib.cuEventCreate(this.slot, 0));
      this.pool.push(handleOf(this.slot));
    }
    check("cuEventRecord", this.lib.cuEventRecord(this.pool[i], this.stream));
    return i;
  }

  /** Record the end event of the op begun by `before()` (which returned `start`). */
  after(start: number, name: string, kind: ProfileKind, flops = 0): void {
    check("cuEventRecord", this.lib.cuEventRecord(this.pool[start + 1], this.stream));
    this.names.push(name);
    this.kinds.push(kind);
    this.flops.push(flops);
    this.starts.push(start);
    if (this.names.length >= FLUSH_OPS) this.flush("profiler flush");
  }

  /** Note `ms` host milliseconds blocked on the GPU at `name`. */
  hostWait(name: string, ms: number): void {
    this.totals.addWait(name, ms);
  }

  /** Wait for the pending ops, fold their times into the totals, free their events. */
  private flush(why: string): void {
    const n = this.names.length;
    if (n > 0) {
      const t0 = performance.now();
      const last = this.pool[this.starts[n - 1] + 1];
      check("cuEventSynchronize", this.lib.cuEventSynchronize(last));
      for (let j = 0; j < n; j++) {
        const s = this.starts[j];
        this.totals.add(this.names[j], this.kinds[j], this.time(s, s + 1), this.flops[j]);
      }
      this.spanMs += this.time(this.starts[0], this.starts[n - 1] + 1);
      this.totals.addWait(why, performance.now() - t0);
    }
    this.names = [];
    this.kinds = [];
    this.flops = [];
    this.starts = [];
    this.used = 0;
  }

  private time(a: number, b: number): number {
    check("cuEventElapsedTime", this.elapsed(this.ms, this.pool[a], this.pool[b]));
    return this.ms[0];
  }

  /** Stop: one synchronization, then the report. */
  stop(): ProfileReport {
    if (!this.active) throw new Error("stopProfile() without startProfile()");
    this.flush("stopProfile (resolve events)");
    check("cuStreamSynchronize", this.lib.cuStreamSynchronize(this.stream));
    this.active = false;
    const wallMs = performance.now() - this.wallStart;
    const { rows, busyMs } = this.totals.rows();
    const hostWaits = this.totals.hostWaits();
    return {
      rows,
      wallMs,
      gpuBusyMs: busyMs,
      gpuSpanMs: this.spanMs,
      ops: this.totals.ops,
      hostWaits,
    };
  }

  /** Destroy the pooled events. */
  destroy(): void {
    for (const e of this.pool) this.lib.cuEventDestroy_v2(e);
    this.pool.length = 0;
  }
}

/**
 * A gemm's profile name: "gemm MxNxK a->c TN (fwd)" (x batch when batched). Without `role`
 * it follows from the transposes of the backend's linear layers: forward TN, input
 * gradient NN, weight gradient NT.
 */
export function gemmName(
  s: { transA: boolean; transB: boolean; m: number; n: number; k: number; batch?: number },
  abType: string,
  cType: string,
  role?: string,
): string {
  const t = `${s.transA ? "T" : "N"}${s.transB ? "T" : "N"}`;
  role ??= t === "TN" ? "fwd" : t === "NN" ? "bwd dinp" : t === "NT" ? "bwd dweight" : "";
  const b = (s.batch ?? 1) > 1 ? ` x${s.batch}` : "";
  return `gemm ${s.m}x${s.n}x${s.k}${b} ${abType}->${cType} ${t}${role ? ` (${role})` : ""}`;
}

/** The report as text lines: a summary, then the top `top` rows as a table. */
export function formatProfile(r: ProfileReport, top = 25): string[] {
  const f = (x: number, d: number) => x.toFixed(d);
  const idle = r.wallMs - r.gpuBusyMs;
  const waitMs = r.hostWaits.reduce((a, w) => a + w.ms, 0);
  const lines = [
    `wall ${f(r.wallMs, 2)} ms; GPU busy ${f(r.gpuBusyMs, 2)} ms (${
      f(r.wallMs > 0 ? (100 * r.gpuBusyMs) / r.wallMs : 0, 1)
    }% of wall); GPU span ${f(r.gpuSpanMs, 2)} ms; wall - busy ${f(idle, 2)} ms ` +
    `(launch overhead, host work, untimed copies); ${r.ops} ops`,
    `host waits on the GPU: ${f(waitMs, 2)} ms in ${
      r.hostWaits.reduce((a, w) => a + w.count, 0)
    } waits` + (r.hostWaits.length
      ? ` (${
        r.hostWaits.map((w) => `${w.name} x${w.count} ${f(w.ms, 2)} ms`).join("; ")
      })`
      : ""),
  ];
  if (r.newDeviceBytes !== undefined) {
    lines.push(`new device memory from the driver: ${f(r.newDeviceBytes / 2 ** 20, 1)} MiB`);
  }
  const head = ["op", "kind", "count", "total ms", "share %", "avg us", "TFLOP/s"];
  const table = [head];
  for (const row of r.rows.slice(0, top)) {
    table.push([
      row.name,
      row.kind,
      String(row.count),
      f(row.totalMs, 3),
      f(100 * row.share, 1),
      f(row.avgUs, 1),
      row.tflops === null ? "" : f(row.tflops, 1),
    ]);
  }
  if (r.rows.length > top) {
    const rest = r.rows.slice(top);
    const ms = rest.reduce((a, x) => a + x.totalMs, 0);
    table.push([
      `(${rest.length} more)`,
      "",
      String(rest.reduce((a, x) => a + x.count, 0)),
      f(ms, 3),
      f(r.gpuBusyMs > 0 ? (100 * ms) / r.gpuBusyMs : 0, 1),
      "",
      "",
    ]);
  }
  const widths = head.map((_, i) => Math.max(...table.map((row) => row[i].length)));
  for (const row of table) {
    lines.push(
      row.map((c, i) => (i >= 2 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  ")
        .trimEnd(),
    );
  }
  return lines;
}
