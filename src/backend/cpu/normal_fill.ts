/**
 * `SeededRandom.fillNormal`'s bulk on both cores: the worker of pool.ts fills the first share of
 * the pairs from the generator's state while this thread skips the same draws (sfc32 alone,
 * about a sixth of a pair's cost) and fills the rest, so the outputs and the final state are
 * those of one thread. Only for arrays in shared memory (the CPU backend's parameter buffers), large enough
 * to pay for the message.
 */
import { NormalKernel } from "./normal_kernel.ts";
import { allShared, CpuPool } from "./pool.ts";

/** Pairs below which one thread does it all (a message costs ~0.1 ms, 2^15 pairs ~0.6 ms). */
const SPLIT_MIN_PAIRS = 1 << 15;
/** The worker's share: a little over half, as this thread also skips the worker's draws. */
const WORKER_SHARE = 0.54;

/**
 * out[at, at + 2 npairs) = the next `npairs` pairs times `std` (npairs a multiple of 4) with
 * `state` advanced past them, as `NormalKernel.fillPairs`; false when the kernel is unavailable
 * (no wasm SIMD, `TUNE_CPU_SIMD=0`): then nothing was written.
 */
export function fillNormalPairs(
  state: Int32Array,
  out: Float32Array,
  at: number,
  npairs: number,
  std: number,
): boolean {
  const kernel = NormalKernel.get();
  if (!kernel) return false;
  const pool = npairs >= SPLIT_MIN_PAIRS && allShared([out]) ? CpuPool.get() : null;
  if (!pool) {
    kernel.fillPairs(state, out, at, npairs, std);
    return true;
  }
  const first = Math.round(npairs * WORKER_SHARE) & ~3;
  const workerState = new Int32Array(new SharedArrayBuffer(16));
  workerState.set(state);
  const share = out.subarray(at, at + 2 * first);
  const job = { kind: "normalPairs", out: share, state: workerState, std } as const;
  const ok = pool.run(job, () => {
    kernel.skipPairs(state, first);
    kernel.fillPairs(state, out, at + 2 * first, npairs - first, std);
  });
  if (!ok) kernel.fillPairs(workerState, share, 0, first, std); // the worker failed: redo it here
  return true;
}
