/**
 * A second thread for the CPU backend's elementwise-heavy kernels (attention, cross-entropy,
 * SwiGLU, AdamW, seeded normal fills): the main thread runs one half of a kernel while a Worker
 * runs the other half on the same SharedArrayBuffer-backed arrays, then blocks on a shared flag
 * until the worker is done. Each half is a PoolJob, which runJob runs on either thread. OpenBLAS
 * already uses both cores inside large matrix products; this keeps the second core busy outside
 * them. During a split, both threads' products use one OpenBLAS thread each. Work that comes
 * every few microseconds (a batched decode step's attention, half of a few-row product) goes
 * through the spinning hand-off of pool_spin.ts instead of a message.
 *
 * The worker starts on first use and is unref'd, so it never keeps a process alive. When it
 * cannot start or be unref'd, or TUNE_CPU_THREADS=1 is set, everything runs on the main
 * thread; when a job fails on the worker, the main thread redoes that share.
 */
import type { AdamWParams } from "../ops.ts";
import { adamwStep } from "./adamw.ts";
import { attentionBackward, type AttentionDims, attentionForward } from "./attention.ts";
import type { Gemm } from "./gemm.ts";
import { crossEntropy, swigluBackward, swigluForward } from "./layers.ts";
import { NormalKernel } from "./normal_kernel.ts";
import type { Scratch } from "./scratch.ts";
import { simdKernels } from "./simd.ts";
import { spinBlock, SpinChannel, WAKE } from "./pool_spin.ts";

/** A job for the worker: a kernel and the share it runs. */
export type PoolJob =
  | {
    kind: "attentionForward";
    matmul: "blas" | "ts";
    a: { out: Float32Array; lse: Float32Array; q: Float32Array; k: Float32Array; v: Float32Array };
    d: AttentionDims;
    u0: number;
    u1: number;
  }
  | {
    kind: "attentionBackward";
    matmul: "blas" | "ts";
    a: {
      dq: Float32Array;
      dk: Float32Array;
      dv: Float32Array;
      dout: Float32Array;
      q: Float32Array;
      k: Float32Array;
      v: Float32Array;
      out: Float32Array;
      lse: Float32Array;
    };
    d: AttentionDims;
    u0: number;
    u1: number;
  }
  | {
    kind: "crossEntropy";
    losses: Float32Array;
    dlogits: Float32Array | null;
    logits: Float32Array;
    targets: Int32Array;
    V: number;
    gradScale: number;
  }
  | { kind: "swigluForward"; out: Float32Array; gate: Float32Array; up: Float32Array }
  | {
    kind: "swigluBackward";
    dgate: Float32Array;
    dup: Float32Array;
    dout: Float32Array;
    gate: Float32Array;
    up: Float32Array;
  }
  | {
    kind: "normalPairs";
    /** 2 * npairs outputs (npairs a multiple of 4); `state` is advanced past their draws. */
    out: Float32Array;
    state: Int32Array;
    std: number;
  }
  | {
    kind: "adamw";
    params: Float32Array;
    grads: Float32Array;
    m: Float32Array;
    v: Float32Array;
    hp: AdamWParams;
  };

/** Scratch slots of attention blocks (slots 0 and 1 belong to gemm.ts). */
const SLOT_ATT_P = 2; // (ROWS, Tk) attention scores / probabilities of a block of rows
const SLOT_ATT_DP = 3; // (ROWS, T) attention dP / dS of a block of rows
/** Query rows per attention block (as attention.ts). */
const ATT_ROWS = 64;

/**
 * Run `job` on this thread (the backend runs its own share and, when the worker failed,
 * the worker's share this way; the worker runs its share this way): products through
 * `gemm(job.matmul)`, attention blocks in `scratch`.
 */
export function runJob(job: PoolJob, scratch: Scratch, gemm: (m: "blas" | "ts") => Gemm): void {
  if (job.kind === "attentionForward") {
    const { a, d } = job;
    const n = Math.min(d.T, ATT_ROWS) * d.Tk;
    // scores in wasm memory when the SIMD kernels run (attention.ts then exps them there)
    const s = simdKernels()?.attnScratch(n) ?? scratch.get(SLOT_ATT_P, n);
    attentionForward(gemm(job.matmul), a.out, a.lse, a.q, a.k, a.v, d, s, job.u0, job.u1);
  } else if (job.kind === "attentionBackward") {
    const { a, d } = job;
    const n = Math.min(d.T, ATT_ROWS) * d.T;
    // P and dP in wasm memory when the SIMD kernels run (attention.ts recomputes them there)
    const [p, dp] = simdKernels()?.attnBackwardScratch(n) ??
      [scratch.get(SLOT_ATT_P, n), scratch.get(SLOT_ATT_DP, n)];
    const g = gemm(job.matmul);
    attentionBackward(
      g,
      a.dq,
      a.dk,
      a.dv,
      a.dout,
      a.q,
      a.k,
      a.v,
      a.out,
      a.lse,
      d,
      p,
      dp,
      job.u0,
      job.u1,
    );
  } else if (job.kind === "crossEntropy") {
    const N = job.losses.length;
    crossEntropy(job.losses, job.dlogits, job.logits, job.targets, N, job.V, job.gradScale);
  } else if (job.kind === "swigluForward") {
    swigluForward(job.out, job.gate, job.up, job.out.length);
  } else if (job.kind === "swigluBackward") {
    swigluBackward(job.dgate, job.dup, job.dout, job.gate, job.up, job.dout.length);
  } else if (job.kind === "normalPairs") {
    const kernel = NormalKernel.get();
    if (!kernel) throw new Error("normalPairs: no wasm SIMD kernels on this thread");
    kernel.fillPairs(job.state, job.out, 0, job.out.length / 2, job.std);
  } else {
    adamwStep(job.params, job.grads, job.m, job.v, job.hp);
  }
}

/** How long to wait for the worker to load before running without it (ms). */
const START_TIMEOUT_MS = 15000;

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/**
 * Deno's Worker has no public unref(); its node:worker_threads wrapper uses a private
 * method keyed by a symbol (it counts references to the worker's message polling). Find it
 * by shape, so a Deno without it simply gets no pool.
 */
function unrefWorker(w: Worker): boolean {
  const proto = Object.getPrototypeOf(w);
  for (const s of Object.getOwnPropertySymbols(proto)) {
    const f = proto[s];
    if (typeof f === "function" && f.length === 1 && String(f).includes("refCount")) {
      f.call(w, false);
      return true;
    }
  }
  return false;
}

/**
 * The worker, its flag ([0] ready, [1] job status: 0 running, 1 done, 2 failed) and the
 * spinning hand-off (pool_spin.ts) for work too frequent for a message.
 */
export class CpuPool {
  readonly #worker: Worker;
  readonly #flag: Int32Array;
  readonly #spin: SpinChannel;
  /** Id of the last arena handed to the worker (it keeps only that one). */
  #arenaId = 0;

  private constructor(worker: Worker, flag: Int32Array, spin: SharedArrayBuffer) {
    this.#worker = worker;
    this.#flag = flag;
    this.#spin = new SpinChannel(spin, () => worker.postMessage(WAKE));
  }

  /** The process-wide pool, started on first call; null when unavailable. */
  static get(): CpuPool | null {
    if (pool === undefined) {
      pool = readEnv("TUNE_CPU_THREADS") !== "1" && navigator.hardwareConcurrency > 1
        ? CpuPool.#start()
        : null;
    }
    return pool;
  }

  static #start(): CpuPool | null {
    const flag = new Int32Array(new SharedArrayBuffer(8));
    const url = new URL("./pool_worker.ts", import.meta.url);
    let worker: Worker;
    try {
      // A `deno compile` binary built without `--include src/backend/cpu/pool_worker.ts`
      // lacks the file: run on one thread rather than wait for a worker that cannot load.
      // (Query first: statSync without read permission could prompt on a terminal.)
      if (url.protocol === "file:") {
        if (Deno.permissions.querySync({ name: "read", path: url }).state !== "granted") {
          return null;
        }
        Deno.statSync(url);
      }
      worker = new Worker(url.href, { type: "module" });
    } catch {
      return null;
    }
    if (!unrefWorker(worker)) {
      worker.terminate();
      return null;
    }
    const spin = spinBlock();
    worker.postMessage(spin);
    worker.postMessage(flag);
    if (Atomics.wait(flag, 0, 0, START_TIMEOUT_MS) === "timed-out" && flag[0] !== 1) {
      worker.terminate();
      return null;
    }
    return new CpuPool(worker, flag, spin);
  }

  /**
   * Run a command of pool_spin.ts on the worker (written into the argument slots by `write`)
   * while `local` runs here; false when the worker failed (the caller runs that share).
   */
  spin(write: (args: Float64Array) => void, local: () => void): boolean {
    return this.#spin.run(write, local);
  }

  /**
   * Hand a fused decoder's shared wasm arena (attention table at byte `attnTable`) to the
   * worker, which keeps only the latest; returns the id its CMD_ATTN commands carry.
   */
  attachArena(memory: WebAssembly.Memory, attnTable: number): number {
    this.#spin.stop(); // the worker reads messages only outside the spinning loop
    const id = ++this.#arenaId;
    this.#worker.postMessage({ attach: memory, id, attnTable });
    return id;
  }

  /**
   * Run `job` on the worker while `local` runs here; returns false when the worker failed
   * (the caller then runs the worker's share itself).
   */
  run(job: PoolJob, local: () => void): boolean {
    this.#spin.stop();
    const flag = this.#flag;
    Atomics.store(flag, 1, 0);
    this.#worker.postMessage(job);
    try {
      local();
    } finally {
      Atomics.wait(flag, 1, 0); // returns at once when the worker has already finished
    }
    return Atomics.load(flag, 1) === 1;
  }
}

let pool: CpuPool | null | undefined;

/** True when every array lives in shared memory (so the worker sees the same elements). */
export function allShared(arrays: readonly (Float32Array | Int32Array | null)[]): boolean {
  for (const a of arrays) if (a !== null && !(a.buffer instanceof SharedArrayBuffer)) return false;
  return true;
}
