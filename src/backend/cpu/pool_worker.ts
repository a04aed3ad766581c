/**
 * The worker of pool.ts: runs its share of an elementwise kernel on shared arrays and
 * reports through the shared flag ([1] = 1 done, 2 failed; the main thread then redoes it).
 */
import { openBlas } from "../../../ffi/openblas.ts";
import { Gemm } from "./gemm.ts";
import { Scratch } from "./scratch.ts";
import { type PoolJob, runJob } from "./pool.ts";

let flag: Int32Array | null = null;
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
    runJob(e.data, scratch, gemmFor);
  } catch {
    status = 2;
  }
  Atomics.store(flag!, 1, status);
  Atomics.notify(flag!, 1);
};
