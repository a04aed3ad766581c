/**
 * The worker of pool.ts: runs its share of an elementwise kernel on shared arrays and
 * reports through the shared flag ([1] = 1 done, 2 failed; the main thread then redoes it).
 */
import { adamwStep } from "./adamw.ts";
import { crossEntropy, swigluBackward, swigluForward } from "./layers.ts";
import type { PoolJob } from "./pool.ts";

let flag: Int32Array | null = null;

function run(job: PoolJob): void {
  if (job.kind === "crossEntropy") {
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
