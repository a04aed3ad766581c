/**
 * The worker of pool.ts: runs its share of an elementwise kernel on shared arrays and
 * reports through the shared flag ([1] = 1 done, 2 failed; the main thread then redoes it).
 */
import { openBlas } from "../../../ffi/openblas.ts";
import { Gemm } from "./gemm.ts";
import { Scratch } from "./scratch.ts";
import { type PoolJob, runJob } from "./pool.ts";
import { CMD_ATTN, CMD_GEMM, serveSpin, WAKE } from "./pool_spin.ts";
import { gemmAtAddresses } from "./gemm.ts";
import { WasmGemv } from "./small_gemv.ts";

let flag: Int32Array | null = null;
let spinSab: SharedArrayBuffer | null = null;
/** The latest fused decoder's shared arena (pool.ts attachArena) and its id. */
let arena: WasmGemv | null = null;
let arenaId = -1;
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

/** A command of the spinning hand-off (pool_spin.ts); its slots as decode.ts / gemm.ts write them. */
function runCommand(a: Float64Array): void {
  if (a[0] === CMD_ATTN) {
    // [1] arena id, [2] sequences n, [3] ldk, [4] nk, [5] NH, [6] group, [7] HS, [8] scale,
    // [9] scores, then per sequence the byte offsets of q, k, v, out
    if (arena === null || a[1] !== arenaId) throw new Error("not the attached arena");
    const [n, ldk, nk, NH, group, HS, scale, s] = a.subarray(2, 10);
    for (let j = 0; j < n; j++) {
      const o = 10 + 4 * j;
      arena.attnDecodeAt(a[o], a[o + 1], a[o + 2], ldk, s, a[o + 3], nk, NH, group, HS, scale);
    }
  } else if (a[0] === CMD_GEMM) {
    // [1..10] gemm.ts GemmAddresses (the addresses as numbers)
    const at = gemmAtAddresses(
      a[1],
      a[2],
      a[3],
      BigInt(a[4]),
      a[5],
      BigInt(a[6]),
      a[7],
      BigInt(a[8]),
      a[9],
      a[10],
    );
    gemmFor("blas").ntOneThread(...at);
  } else throw new Error(`unknown pool command ${a[0]}`);
}

type Message =
  | Int32Array
  | SharedArrayBuffer
  | typeof WAKE
  | { attach: WebAssembly.Memory; id: number; attnTable: number }
  | PoolJob;

// A worker's global scope (Deno's default lib types describe the main window).
const scope = self as unknown as { onmessage: (e: MessageEvent<Message>) => void };
scope.onmessage = (e) => {
  const m = e.data;
  if (m instanceof SharedArrayBuffer) {
    spinSab = m;
    return;
  }
  if (m === WAKE) {
    serveSpin(spinSab!, runCommand);
    return;
  }
  if (m instanceof Int32Array) {
    flag = m;
    Atomics.store(flag, 0, 1); // ready
    Atomics.notify(flag, 0);
    return;
  }
  if ("attach" in m) {
    try {
      arena = WasmGemv.onSharedArena(m.attach, m.attnTable);
    } catch {
      arena = null; // its commands then fail and the main thread runs them
    }
    arenaId = m.id;
    return;
  }
  let status = 1;
  try {
    runJob(m, scratch, gemmFor);
  } catch {
    status = 2;
  }
  Atomics.store(flag!, 1, status);
  Atomics.notify(flag!, 1);
};
