/**
 * The harness of the GPU checks (tests/gpu/*_test.ts and scripts/gpu_check.ts): options,
 * tolerances, seeded random inputs, the CPU oracle and the backend under test with paired
 * buffers, worst-element comparison, and the check runner that prints one PASS/FAIL line per
 * check. Inputs are drawn in fp32 and, for bf16 runs, rounded to bf16 before both backends
 * see them, so the comparison measures the kernels, not the input rounding.
 * Tolerances (|gpu - ref| <= atol + rtol * |ref|):
 *   bf16 outputs:            atol 1e-2, rtol 0.08 (STYLE.md "CUDA bf16 vs CPU fp32")
 *   fp32 elementwise/rows:   atol 1e-5, rtol 1e-4
 *   fp32 products/gradients: atol 1e-4, rtol 1e-3 (summation order differs)
 *   flash vs general attention gradients (bf16): atol 2e-2, rtol 0.08 (see FLASH_GRAD)
 *   exact ops (copies, casts, dropout masks, KV-cache writes): bitwise
 */
import { CpuBackend } from "../../src/backend/cpu/backend.ts";
import { roundArrayBf16 } from "../../src/backend/cpu/buffer.ts";
import { createCudaBackend, type CudaBackend } from "../../src/backend/cuda/backend.ts";
import type { Backend, DeviceBuffer, DType } from "../../src/backend/ops.ts";
import { gpuCount } from "../_gpu_probe.ts";

// ---- options --------------------------------------------------------------------------

export const only = Deno.args.find((a) => a.startsWith("--only="))?.slice(7).split(",") ?? null;
export const withModel = !Deno.args.includes("--no-model");
export const selfTest = Deno.args.includes("--self-test");
/**
 * --small (or TUNE_GPU_SMALL=1 under `deno test`): tiny shapes, for the CPU emulation of the
 * kernels (tests/cuda_emulator_test.ts).
 */
export const SMALL = Deno.args.includes("--small") || Deno.env.get("TUNE_GPU_SMALL") === "1";

/** `big` normally, `small` under --small. */
export function sz(big: number, small: number): number {
  return SMALL ? small : big;
}

export function selected(name: string): boolean {
  return only === null || only.some((o) => name.includes(o));
}

// ---- tolerances -----------------------------------------------------------------------

export interface Tol {
  atol: number;
  rtol: number;
}
export const EXACT: Tol = { atol: 0, rtol: 0 };
export const BF16: Tol = { atol: 1e-2, rtol: 0.08 };
export const F32_EW: Tol = { atol: 1e-5, rtol: 1e-4 };
export const F32_PROD: Tol = { atol: 1e-4, rtol: 1e-3 };
/**
 * Flash vs general attention gradients: the flash backward rounds P and dS to bf16 before
 * their products (as FlashAttention-2 and PyTorch's SDPA do), the general kernel keeps them
 * fp32, so sums over a thousand queries differ by up to ~1e-2 more than the output rounding
 * (first H200 run: dv off by 1.11e-2 on a 4.7e-3 value, packed T=1024). A masking or
 * indexing error shows as O(0.1..1).
 */
export const FLASH_GRAD: Tol = { atol: 2e-2, rtol: 0.08 };

export function tolFor(dt: DType, f32: Tol): Tol {
  return dt === "bf16" ? BF16 : f32;
}

// ---- random inputs --------------------------------------------------------------------

export let rngState = 0x2545f491;
export function uniform(): number {
  // xorshift32: deterministic, fresh values per call
  rngState ^= rngState << 13;
  rngState ^= rngState >>> 17;
  rngState ^= rngState << 5;
  return (rngState >>> 0) / 4294967296;
}
export function randn(n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(uniform(), 1e-12), v = uniform();
    out[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}
export function randInt(n: number, hi: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(uniform() * hi);
  return out;
}

// ---- the two backends and paired buffers -------------------------------------------------

export let cpu: CpuBackend;
/** The backend under test: CUDA, or (with --self-test) a CPU stand-in to test this script. */
export type UnderTest = Pick<CudaBackend, "info" | "matmulBatched" | "bytesReserved"> & Backend;
export let gpu: UnderTest;

/**
 * A CPU backend posing as the GPU (--self-test): every check must pass against it, except
 * where a CPU "bf16" buffer does not round its outputs (dropout masks [bf16]). Used to test
 * this script on machines without a GPU.
 */
export class CpuStandIn extends CpuBackend {
  readonly info = {
    name: "CPU stand-in (--self-test)",
    totalBytes: 0,
    driverVersion: 0,
    computeCapability: [0, 0] as [number, number],
    multiprocessors: 0,
  };
  matmulBatched(
    out: DeviceBuffer,
    inp: DeviceBuffer,
    weight: DeviceBuffer,
    batch: number,
    M: number,
    K: number,
    N: number,
  ): void {
    for (let b = 0; b < batch; b++) {
      this.matmulForward(
        this.view(out, b * M * N, M * N),
        this.view(inp, b * M * K, M * K),
        this.view(weight, b * N * K, N * K),
        null,
        M,
        K,
        N,
      );
    }
  }
  bytesReserved(): number {
    return this.bytesInUse();
  }
}

/** One logical tensor held by both backends (the CPU copy is always fp32). */
export interface Pair {
  c: DeviceBuffer;
  g: DeviceBuffer;
  dt: DType;
}

export const live: Pair[] = [];

/** Upload `host` to both backends; for bf16 both get the bf16-rounded values. */
export function pair(host: Float32Array | Int32Array, dt: DType): Pair {
  const c = cpu.alloc(host.length, dt === "i32" ? "i32" : "f32");
  const g = gpu.alloc(host.length, dt);
  let h = host;
  if (dt === "bf16") {
    h = new Float32Array(host.length);
    roundArrayBf16(h as Float32Array, host);
  }
  cpu.upload(c, h);
  gpu.upload(g, h);
  const p = { c, g, dt };
  live.push(p);
  return p;
}

export function zeros(n: number, dt: DType): Pair {
  return pair(dt === "i32" ? new Int32Array(n) : new Float32Array(n), dt);
}

export function freeAll(): void {
  for (const p of live.splice(0)) {
    cpu.free(p.c);
    gpu.free(p.g);
  }
}

export interface Worst {
  maxAbs: number;
  excess: number;
  index: number;
  got: number;
  want: number;
}

export function worst(got: ArrayLike<number>, want: ArrayLike<number>, tol: Tol): Worst {
  if (got.length !== want.length) throw new Error(`length ${got.length} != ${want.length}`);
  const w: Worst = { maxAbs: 0, excess: -Infinity, index: -1, got: 0, want: 0 };
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    const bad = Number.isNaN(got[i]) !== Number.isNaN(want[i]);
    const e = bad
      ? Infinity
      : Number.isNaN(d)
      ? -Infinity
      : d - (tol.atol + tol.rtol * Math.abs(want[i]));
    if (!Number.isNaN(d) && d > w.maxAbs) w.maxAbs = d;
    if (e > w.excess) Object.assign(w, { excess: e, index: i, got: got[i], want: want[i] });
  }
  return w;
}

/** Compare one output; returns a description and whether it passed. */
export interface Outcome {
  label: string;
  ok: boolean;
  detail: string;
}

export function cmpArrays(
  label: string,
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  tol: Tol,
): Outcome {
  const w = worst(got, want, tol);
  const ok = w.excess <= 0;
  const where = w.index >= 0 ? ` worst at ${w.index}: gpu ${w.got} ref ${w.want}` : "";
  return {
    label,
    ok,
    detail: `max|diff| ${w.maxAbs.toExponential(2)} (atol ${tol.atol} rtol ${tol.rtol})${
      ok ? "" : where
    }`,
  };
}

export function cmp(label: string, p: Pair, tol: Tol): Outcome {
  const ref = cpu.download(p.c);
  // A bitwise check of a bf16 result compares against the bf16 rounding of the fp32 oracle.
  if (tol === EXACT && p.dt === "bf16") roundArrayBf16(ref as Float32Array, ref.slice());
  return cmpArrays(label, gpu.download(p.g), ref, tol);
}

// ---- the check runner ---------------------------------------------------------------------

export const results: { name: string; ok: boolean }[] = [];

export function check(name: string, fn: () => Outcome[]): void {
  if (!selected(name)) return;
  const t0 = performance.now();
  try {
    const outs = fn();
    gpu.sync();
    const ms = (performance.now() - t0).toFixed(0);
    const ok = outs.every((o) => o.ok);
    results.push({ name, ok });
    const body = outs.map((o) => `${o.label}: ${o.detail}`).join("; ");
    console.log(`${ok ? "PASS" : "FAIL"}  ${name.padEnd(34)} ${body}  [${ms} ms]`);
  } catch (e) {
    results.push({ name, ok: false });
    const msg = e instanceof Error ? (e.stack ?? e.message) : String(e);
    console.log(`FAIL  ${name.padEnd(34)} error: ${msg}`);
  } finally {
    try {
      freeAll();
    } catch (e) {
      console.log(`      (freeing buffers after ${name} failed: ${(e as Error).message})`);
    }
  }
}

/**
 * Segment ids and positions of packed samples, (B, T) each: row b holds samples of 40 + 7b
 * tokens (a segment starting past key 32 leaves a first chunk of keys wholly masked), the
 * last one cut at T; positions restart at 0 in every sample.
 */
export function packedIds(B: number, T: number): { segments: Int32Array; positions: Int32Array } {
  const segments = new Int32Array(B * T), positions = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    const len = 40 + 7 * b;
    for (let t = 0; t < T; t++) {
      segments[b * T + t] = Math.floor(t / len);
      positions[b * T + t] = t % len;
    }
  }
  return { segments, positions };
}

/** Set the oracle and the backend under test (the runner, or a test's set-up). */
export function setBackends(oracle: CpuBackend, underTest: UnderTest): void {
  cpu = oracle;
  gpu = underTest;
}

/**
 * Whether a CUDA driver with at least one GPU answers (TUNE_LIBCUDA may point at the CPU
 * kernel emulator of tests/cuda_emulator_test.ts, which counts as one).
 */
const GPU_PRESENT = gpuCount() > 0;

/**
 * Register the checks of one op family as a Deno test: it runs when a GPU is present
 * (against a fresh CUDA backend and the CPU oracle; TUNE_GPU_SMALL=1 for tiny shapes) and
 * is ignored otherwise, with the reason in its name. scripts/gpu_check.ts runs the same
 * check functions in one process for a GPU session and for the kernel emulator.
 */
export function gpuTest(family: string, checks: () => void | Promise<void>): void {
  Deno.test({
    name: `GPU checks: ${family}${
      GPU_PRESENT ? "" : " (needs an NVIDIA GPU: no CUDA driver or device found)"
    }`,
    ignore: !GPU_PRESENT,
    async fn() {
      const under = createCudaBackend();
      setBackends(new CpuBackend(), under);
      const before = results.length;
      try {
        await checks();
      } finally {
        under.destroy();
      }
      const failed = results.slice(before).filter((r) => !r.ok).map((r) => r.name);
      if (failed.length > 0) throw new Error(`failed GPU checks: ${failed.join(", ")}`);
    },
  });
}
