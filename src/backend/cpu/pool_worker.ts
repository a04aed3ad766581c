/**
 * The worker of pool.ts: runs its share of an elementwise kernel on shared arrays and
 * reports through the shared flag ([1] = 1 done, 2 failed; the main thread then redoes it).
 */
import { openBlas } from "../../../ffi/openblas.ts";
import { adamwStep } from "./adamw.ts";
import { attentionBackward, attentionForward } from "./attention.ts";
import { Gemm } from "./gemm.ts";
import { Scratch } from "./scratch.ts";
import { simdKernels } from "./simd.ts";
import { crossEntropy, swigluBackward, swigluForward } from "./layers.ts";
import type { PoolJob } from "./pool.ts";

let flag: Int32Array | null = null;
/** Scratch slots of attention blocks (slots 0 and 1 belong to gemm.ts). */
const SLOT_P = 2;
const SLOT_DP = 3;
const scratch = new Scratch();
const gemms = new Map<string, Gemm>();

/** This thread's products, on one OpenBLAS thread (the main thread runs the other half). */
function gemmFor(matmul: "blas" | "ts"): Gemm {
  let g = gemms.get(matmul);
  if (!g) {
    g = new Gemm(matmul === "blas" ? openBlas() : null, scratch);
    g.maxThreads = 1;
    gemms.set(matmul, g);
  }
  // The thread count is process-wide in OpenBLAS and this thread's cache of it may be stale.
  g.blas?.setThreads(1, true);
  return g;
}

function run(job: PoolJob): void {
  if (job.kind === "attentionForward") {
    const { a, d } = job;
    const n = Math.min(d.T, 64) * d.Tk;
    const s = simdKernels()?.attnScratch(n) ?? scratch.get(SLOT_P, n);
    attentionForward(gemmFor(job.matmul), a.out, a.lse, a.q, a.k, a.v, d, s, job.u0, job.u1);
  } else if (job.kind === "attentionBackward") {
    const { a, d } = job;
    const p = scratch.get(SLOT_P, Math.min(d.T, 64) * d.T);
    const dp = scratch.get(SLOT_DP, Math.min(d.T, 64) * d.T);
    const g = gemmFor(job.matmul);
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
  } else {
    adamwStep(job.params, job.grads, job.m, job.v, job.hp);
  }
}

// A worker's global scope (Deno's default lib types describe the main window).
const scope = self as unknown as { onmessage: (e: MessageEvent<Int32Array | PoolJob>) => void };
scope.onmessage = (e) => {
  if (e.data instanceof Int32Array) {
    flag = e.data;
    Atomics.store(flag, 0, 1); // ready
    Atomics.notify(flag, 0);
    return;
  }
  let status = 1;
  try {
    run(e.data);
  } catch {
    status = 2;
  }
  Atomics.store(flag!, 1, status);
  Atomics.notify(flag!, 1);
};
