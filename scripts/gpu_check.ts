/**
 * GPU check: every op of the CUDA backend against the CPU backend (the numerical oracle)
 * on fresh random inputs at realistic sizes (f32 and bf16), opt-in TF32, NCCL at world
 * size 1, matmul/attention/cross-entropy against PyTorch on the same GPU (when python3 has
 * torch), timings (information only), then the tiny Llama: one training step (full and
 * LoRA) on both backends, 10 AdamW steps against the PyTorch fixture, and the aidreams260K
 * mean cross-entropy and greedy generation against reference.jsonl. One line per check
 * with its worst error and PASS/FAIL; exit code 1 if anything fails. One failing check
 * does not stop the others (a CUDA error that poisons the context fails the rest).
 *
 *   deno run -A scripts/gpu_check.ts               # everything (a few minutes on one H100)
 *   deno run -A scripts/gpu_check.ts --only=matmul,attention   # checks whose name matches
 *   deno run -A scripts/gpu_check.ts --no-model    # ops only
 *   deno run -A scripts/gpu_check.ts --self-test   # no GPU: a CPU stand-in tests the script
 *   deno run -A scripts/gpu_check.ts --small       # tiny shapes (for the kernel emulator)
 *
 * On a lent GPU machine (no Deno, no ../shared, no network there), scripts/gpu_session.sh runs
 * this script, the NCCL tests and the benchmark in one call; its header says how to prepare
 * the `.gpu` folder the call carries.
 *
 * Inputs are drawn in fp32 and, for bf16 runs, rounded to bf16 before both backends see
 * them, so the comparison measures the kernels, not the input rounding.
 * Tolerances (|gpu - ref| <= atol + rtol * |ref|):
 *   bf16 outputs:            atol 1e-2, rtol 0.08 (STYLE.md "CUDA bf16 vs CPU fp32")
 *   fp32 elementwise/rows:   atol 1e-5, rtol 1e-4
 *   fp32 products/gradients: atol 1e-4, rtol 1e-3 (summation order differs)
 *   flash vs general attention gradients (bf16): atol 2e-2, rtol 0.08 (see FLASH_GRAD)
 *   exact ops (copies, casts, dropout masks, KV-cache writes): bitwise
 */
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { roundArrayBf16 } from "../src/backend/cpu/buffer.ts";
import type { Backend, DeviceBuffer, DType, RopeLayout } from "../src/backend/ops.ts";
import { createCudaBackend, CudaBackend } from "../src/backend/cuda/backend.ts";
import { cublasLt, cublasLtPath } from "../ffi/cublaslt.ts";
import { ncclUniqueId } from "../ffi/nccl.ts";
import { TuneError } from "../src/errors.ts";

// ---- options --------------------------------------------------------------------------

const only = Deno.args.find((a) => a.startsWith("--only="))?.slice(7).split(",") ?? null;
const withModel = !Deno.args.includes("--no-model");
const selfTest = Deno.args.includes("--self-test");
/** --small: tiny shapes, for the CPU emulation of the kernels (tests/cuda_emulator_test.ts). */
const SMALL = Deno.args.includes("--small");

/** `big` normally, `small` under --small. */
function sz(big: number, small: number): number {
  return SMALL ? small : big;
}

function selected(name: string): boolean {
  return only === null || only.some((o) => name.includes(o));
}

// ---- tolerances -----------------------------------------------------------------------

interface Tol {
  atol: number;
  rtol: number;
}
const EXACT: Tol = { atol: 0, rtol: 0 };
const BF16: Tol = { atol: 1e-2, rtol: 0.08 };
const F32_EW: Tol = { atol: 1e-5, rtol: 1e-4 };
const F32_PROD: Tol = { atol: 1e-4, rtol: 1e-3 };
/**
 * Flash vs general attention gradients: the flash backward rounds P and dS to bf16 before
 * their products (as FlashAttention-2 and PyTorch's SDPA do), the general kernel keeps them
 * fp32, so sums over a thousand queries differ by up to ~1e-2 more than the output rounding
 * (first H200 run: dv off by 1.11e-2 on a 4.7e-3 value, packed T=1024). A masking or
 * indexing error shows as O(0.1..1).
 */
const FLASH_GRAD: Tol = { atol: 2e-2, rtol: 0.08 };

function tolFor(dt: DType, f32: Tol): Tol {
  return dt === "bf16" ? BF16 : f32;
}

// ---- random inputs --------------------------------------------------------------------

let rngState = 0x2545f491;
function uniform(): number {
  // xorshift32: deterministic, fresh values per call
  rngState ^= rngState << 13;
  rngState ^= rngState >>> 17;
  rngState ^= rngState << 5;
  return (rngState >>> 0) / 4294967296;
}
function randn(n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(uniform(), 1e-12), v = uniform();
    out[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}
function randInt(n: number, hi: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(uniform() * hi);
  return out;
}

// ---- the two backends and paired buffers -------------------------------------------------

let cpu: CpuBackend;
/** The backend under test: CUDA, or (with --self-test) a CPU stand-in to test this script. */
type UnderTest = Pick<CudaBackend, "info" | "matmulBatched" | "bytesReserved"> & Backend;
let gpu: UnderTest;

/**
 * A CPU backend posing as the GPU (--self-test): every check must pass against it, except
 * where a CPU "bf16" buffer does not round its outputs (dropout masks [bf16]). Used to test
 * this script on machines without a GPU.
 */
class CpuStandIn extends CpuBackend {
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
interface Pair {
  c: DeviceBuffer;
  g: DeviceBuffer;
  dt: DType;
}

const live: Pair[] = [];

/** Upload `host` to both backends; for bf16 both get the bf16-rounded values. */
function pair(host: Float32Array | Int32Array, dt: DType): Pair {
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

function zeros(n: number, dt: DType): Pair {
  return pair(dt === "i32" ? new Int32Array(n) : new Float32Array(n), dt);
}

function freeAll(): void {
  for (const p of live.splice(0)) {
    cpu.free(p.c);
    gpu.free(p.g);
  }
}

interface Worst {
  maxAbs: number;
  excess: number;
  index: number;
  got: number;
  want: number;
}

function worst(got: ArrayLike<number>, want: ArrayLike<number>, tol: Tol): Worst {
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
interface Outcome {
  label: string;
  ok: boolean;
  detail: string;
}

function cmpArrays(
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

function cmp(label: string, p: Pair, tol: Tol): Outcome {
  const ref = cpu.download(p.c);
  // A bitwise check of a bf16 result compares against the bf16 rounding of the fp32 oracle.
  if (tol === EXACT && p.dt === "bf16") roundArrayBf16(ref as Float32Array, ref.slice());
  return cmpArrays(label, gpu.download(p.g), ref, tol);
}

// ---- the check runner ---------------------------------------------------------------------

const results: { name: string; ok: boolean }[] = [];

function check(name: string, fn: () => Outcome[]): void {
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

// ---- op checks ------------------------------------------------------------------------------

/** kernels/dora.cu against the CPU twins (a bf16 frozen base and bf16 activations too). */
function doraChecks(): void {
  for (const dt of ["f32", "bf16"] as const) {
    check(`doraNorm [${dt} weight]`, () => {
      const O = sz(4096, 37), I = sz(4096, 300); // rows longer than a block's 256 threads
      const w = pair(randn(O * I), dt), ba = pair(randn(O * I), "f32");
      const mag = pair(randn(O), "f32"), g = zeros(O, "f32"), n = zeros(O, "f32");
      cpu.doraNorm(g.c, n.c, w.c, ba.c, mag.c, 2.5, O, I);
      gpu.doraNorm(g.g, n.g, w.g, ba.g, mag.g, 2.5, O, I);
      return [cmp("norm", n, F32_EW), cmp("scale", g, F32_EW)];
    });
    check(`scaleColumns / doraMagnitudeBackward [${dt}]`, () => {
      const N = sz(4096, 29), C = sz(4096, 301);
      const x = pair(randn(N * C), dt), v = pair(randn(C), "f32"), y = zeros(N * C, dt);
      cpu.scaleColumns(y.c, x.c, v.c, N, C);
      gpu.scaleColumns(y.g, x.g, v.g, N, C);
      const out = [cmp("out of place", y, tolFor(dt, F32_EW))];
      cpu.scaleColumns(x.c, x.c, v.c, N, C);
      gpu.scaleColumns(x.g, x.g, v.g, N, C);
      out.push(cmp("in place", x, tolFor(dt, F32_EW)));
      const dy = pair(randn(N * C), dt), z = pair(randn(N * C), dt);
      const norm = pair(randn(C).map((a) => 1 + Math.abs(a)), "f32"), dm = pair(randn(C), "f32");
      cpu.doraMagnitudeBackward(dm.c, dy.c, z.c, norm.c, N, C);
      gpu.doraMagnitudeBackward(dm.g, dy.g, z.g, norm.g, N, C);
      out.push(cmp("dmagnitude (accumulated)", dm, F32_PROD));
      return out;
    });
  }
}

function memoryChecks(): void {
  check("alloc zero-fills, free reuses", () => {
    const n = sz(1000003, 1003);
    const a = gpu.alloc(n, "f32");
    gpu.upload(a, randn(n));
    gpu.free(a);
    const b = gpu.alloc(n, "f32"); // same size class: the cached block comes back
    const z = gpu.download(b);
    gpu.free(b);
    const c = gpu.alloc(77, "i32");
    const zi = gpu.download(c);
    gpu.free(c);
    return [
      cmpArrays("reused f32", z, new Float32Array(n), EXACT),
      cmpArrays("i32", zi, new Int32Array(77), EXACT),
    ];
  });
  for (const dt of ["f32", "bf16", "i32"] as const) {
    check(`upload/view/download/fill [${dt}]`, () => {
      const n = 4099;
      const host = dt === "i32" ? randInt(n, 1 << 30) : randn(n);
      const p = pair(host, dt);
      const part = dt === "i32" ? randInt(100, 1000) : randn(100);
      if (dt === "bf16") roundArrayBf16(part as Float32Array, part.slice());
      cpu.upload(p.c, part, 1234);
      gpu.upload(p.g, part, 1234);
      const out = [cmp("upload+offset", p, EXACT)];
      const vg = gpu.view(p.g, 17, 200), vc = cpu.view(p.c, 17, 200);
      out.push(cmpArrays("view", gpu.download(vg), cpu.download(vc), EXACT));
      cpu.fill(cpu.view(p.c, 5, 300), dt === "i32" ? -7 : 0.3);
      gpu.fill(gpu.view(p.g, 5, 300), dt === "i32" ? -7 : 0.3);
      out.push(cmp("fill view", p, EXACT));
      return out;
    });
  }
  check("copy f32<->bf16 (round to nearest even)", () => {
    const n = sz(100003, 1003);
    const f = pair(randn(n, 3), "f32");
    const b = zeros(n, "bf16");
    // The CPU copy into a bf16 buffer rounds the same way; its CPU twin here is fp32, so
    // compare against the host-rounded values.
    gpu.copy(b.g, f.g);
    const want = new Float32Array(n);
    roundArrayBf16(want, cpu.download(f.c) as Float32Array);
    const out = [cmpArrays("f32->bf16", gpu.download(b.g), want, EXACT)];
    const back = gpu.alloc(n, "f32");
    gpu.copy(back, b.g);
    out.push(cmpArrays("bf16->f32", gpu.download(back), want, EXACT));
    gpu.free(back);
    const f2 = zeros(n, "f32");
    gpu.copy(f2.g, f.g);
    cpu.copy(f2.c, f.c);
    out.push(cmp("f32->f32", f2, EXACT));
    return out;
  });
}

function elementwiseChecks(): void {
  for (const dt of ["f32", "bf16"] as const) {
    const n = sz(1000003, 2003);
    check(`add/mul/axpy/scale [${dt}]`, () => {
      const a = pair(randn(n), dt), b = pair(randn(n), dt), o = zeros(n, dt);
      const out: Outcome[] = [];
      cpu.add(o.c, a.c, b.c);
      gpu.add(o.g, a.g, b.g);
      out.push(cmp("add", o, tolFor(dt, F32_EW)));
      cpu.mul(a.c, a.c, b.c); // out aliases a
      gpu.mul(a.g, a.g, b.g);
      out.push(cmp("mul (out=a)", a, tolFor(dt, F32_EW)));
      cpu.axpy(o.c, b.c, -0.37);
      gpu.axpy(o.g, b.g, -0.37);
      out.push(cmp("axpy", o, tolFor(dt, F32_EW)));
      cpu.scale(o.c, 1.7);
      gpu.scale(o.g, 1.7);
      out.push(cmp("scale", o, tolFor(dt, F32_EW)));
      return out;
    });
    check(`sum/sumSquares [${dt}]`, () => {
      const m = sz(10_000_019, 70_019);
      const x = pair(randn(m), dt);
      const host = cpu.download(x.c);
      let abs = 0;
      for (const v of host) abs += Math.abs(v);
      const out: Outcome[] = [];
      const s = [gpu.sum(x.g)], r = [cpu.sum(x.c)];
      out.push(cmpArrays("sum", s, r, { atol: 1e-6 * abs, rtol: 0 }));
      const q = [gpu.sumSquares(x.g)], rq = [cpu.sumSquares(x.c)];
      out.push(cmpArrays("sumSquares", q, rq, { atol: 0, rtol: 1e-5 }));
      // Integers below 2^24 add exactly in fp32: a missed or doubled element shows.
      gpu.fill(x.g, 1);
      out.push(
        cmpArrays("sum of ones (exact)", [gpu.sum(x.g), gpu.sumSquares(x.g)], [m, m], EXACT),
      );
      return out;
    });
    check(`dropoutMask [${dt}]`, () => {
      const m = sz(1 << 20, 5000) + 7;
      const out: Outcome[] = [];
      for (const [p, seed] of [[0.1, 1234567], [0.5, 2 ** 33 + 5], [0, 3]] as const) {
        const k = zeros(m, dt);
        cpu.dropoutMask(k.c, p, seed);
        gpu.dropoutMask(k.g, p, seed);
        const want = cpu.download(k.c) as Float32Array;
        if (dt === "bf16") roundArrayBf16(want, want.slice());
        out.push(cmpArrays(`p=${p} seed=${seed}`, gpu.download(k.g), want, EXACT));
      }
      return out;
    });
  }
}

function matmulChecks(): void {
  const shapes: [number, number, number][] = [
    [sz(512, 24), sz(1024, 40), sz(2816, 56)], // (B*T, C) x (H, C)^T
    [1, sz(1024, 64), sz(1024, 48)], // decode row
    [37, 100, 75], // odd sizes, unaligned leading dimensions
  ];
  for (const dt of ["f32", "bf16"] as const) {
    for (const [M, K, N] of shapes) {
      check(`matmulForward ${M}x${K}x${N} [${dt}]`, () => {
        const x = pair(randn(M * K), dt), w = pair(randn(N * K, 1 / Math.sqrt(K)), dt);
        const bias = pair(randn(N), dt), o = pair(randn(M * N), dt);
        const tol = tolFor(dt, F32_PROD);
        const out: Outcome[] = [];
        cpu.matmulForward(o.c, x.c, w.c, null, M, K, N);
        gpu.matmulForward(o.g, x.g, w.g, null, M, K, N);
        out.push(cmp("plain", o, tol));
        cpu.matmulForward(o.c, x.c, w.c, bias.c, M, K, N, true);
        gpu.matmulForward(o.g, x.g, w.g, bias.g, M, K, N, true);
        out.push(cmp("bias+accumulate", o, tol));
        return out;
      });
      check(`matmulBackward ${M}x${K}x${N} [${dt}]`, () => {
        const x = pair(randn(M * K), dt), w = pair(randn(N * K, 1 / Math.sqrt(K)), dt);
        const dy = pair(randn(M * N), dt);
        const dx = pair(randn(M * K), dt),
          dw = pair(randn(N * K), "f32"),
          db = pair(randn(N), "f32");
        cpu.matmulBackward(dx.c, dw.c, db.c, dy.c, x.c, w.c, M, K, N);
        gpu.matmulBackward(dx.g, dw.g, db.g, dy.g, x.g, w.g, M, K, N);
        const tol = tolFor(dt, F32_PROD);
        // dweight/dbias are fp32 accumulators; with bf16 operands the products still carry
        // bf16 input error only, which the bf16 tolerance covers.
        return [cmp("dinp", dx, tol), cmp("dweight(f32)", dw, tol), cmp("dbias(f32)", db, tol)];
      });
    }
  }
  check("matmulForward on unaligned views [bf16]", () => {
    const M = 64, K = 256, N = 128;
    const x = pair(randn(M * K + 3), "bf16"), w = pair(randn(N * K + 5, 0.06), "bf16");
    const o = pair(randn(M * N + 1), "bf16");
    const v = (p: Pair, off: number, n: number) => ({
      c: cpu.view(p.c, off, n),
      g: gpu.view(p.g, off, n),
      dt: p.dt,
    });
    const xv = v(x, 3, M * K), wv = v(w, 5, N * K), ov = v(o, 1, M * N);
    cpu.matmulForward(ov.c, xv.c, wv.c, null, M, K, N);
    gpu.matmulForward(ov.g, xv.g, wv.g, null, M, K, N);
    return [cmp("out", ov, BF16)];
  });
  if (!selfTest) {
    check("matmulForward f32 on TF32 tensor cores (opt-in)", () => {
      const M = sz(512, 16), K = sz(1024, 48), N = sz(2816, 40);
      const be = createCudaBackend({ tf32: true });
      const x = randn(M * K), w = randn(N * K, 1 / Math.sqrt(K));
      const xg = be.alloc(M * K), wg = be.alloc(N * K), og = be.alloc(M * N);
      be.upload(xg, x);
      be.upload(wg, w);
      be.matmulForward(og, xg, wg, null, M, K, N);
      const got = be.download(og);
      const o = zeros(M * N, "f32"), xc = pair(x, "f32"), wc = pair(w, "f32");
      cpu.matmulForward(o.c, xc.c, wc.c, null, M, K, N);
      be.destroy();
      // TF32 keeps 10 mantissa bits of each operand: about 1e-3 relative per product.
      return [cmpArrays("out", got, cpu.download(o.c), { atol: 1e-2, rtol: 1e-2 })];
    });
  }
  check("matmul mixed dtypes (bf16 x f32 -> f32)", () => {
    const M = sz(128, 8), K = sz(512, 40), N = sz(256, 24);
    const x = pair(randn(M * K), "bf16"), w = pair(randn(N * K, 0.05), "f32");
    const o = pair(randn(M * N), "f32");
    cpu.matmulForward(o.c, x.c, w.c, null, M, K, N);
    gpu.matmulForward(o.g, x.g, w.g, null, M, K, N);
    return [cmp("out", o, BF16)];
  });
  for (const dt of ["f32", "bf16"] as const) {
    check(`matmulBatched (strided batch) [${dt}]`, () => {
      const batch = 6, M = 64, K = 96, N = 80;
      const x = pair(randn(batch * M * K), dt), w = pair(randn(batch * N * K, 0.1), dt);
      const o = pair(new Float32Array(batch * M * N), dt);
      for (let b = 0; b < batch; b++) {
        cpu.matmulForward(
          cpu.view(o.c, b * M * N, M * N),
          cpu.view(x.c, b * M * K, M * K),
          cpu.view(w.c, b * N * K, N * K),
          null,
          M,
          K,
          N,
        );
      }
      gpu.matmulBatched(o.g, x.g, w.g, batch, M, K, N);
      return [cmp("out", o, tolFor(dt, F32_PROD))];
    });
  }
}

function layerChecks(): void {
  for (const dt of ["f32", "bf16"] as const) {
    check(`embedding fwd/bwd [${dt}]`, () => {
      const V = sz(32000, 50), C = sz(1024, 64), N = sz(512, 24);
      const tok = randInt(N, Math.min(V, 200)); // many repeats, so backward collides
      const t = pair(tok, "i32"), table = pair(randn(V * C), dt), o = zeros(N * C, dt);
      cpu.embeddingForward(o.c, t.c, table.c, N, C);
      gpu.embeddingForward(o.g, t.g, table.g, N, C);
      const init = randn(V * C, 0.1);
      const dy = pair(randn(N * C), dt), dtab = pair(init, "f32"), again = pair(init, "f32");
      cpu.embeddingBackward(dtab.c, dy.c, t.c, N, C);
      gpu.embeddingBackward(dtab.g, dy.g, t.g, N, C);
      gpu.embeddingBackward(again.g, dy.g, t.g, N, C);
      return [
        cmp("forward", o, EXACT),
        cmp("dtable(f32)", dtab, tolFor(dt, F32_EW)),
        cmpArrays("backward twice (bitwise)", gpu.download(again.g), gpu.download(dtab.g), EXACT),
      ];
    });
    // C = 36: not a multiple of 8, so the kernels' scalar path (the others vectorise);
    // 1024, 4104, 8200: 2, 3 and 5 8-column vectors per thread of the block-per-row kernels
    const shapes = [
      [sz(512, 9), sz(1024, 96)],
      [67, 64],
      [5, 36],
      [3, 1024],
      [2, 4104],
      [2, 8200],
    ];
    for (const [N, C] of shapes) {
      check(`rmsnorm fwd/bwd N=${N} C=${C} [${dt}]`, () => {
        const x = pair(randn(N * C, 2), dt), w = pair(randn(C, 0.5), dt);
        const o = zeros(N * C, dt), r = zeros(N, "f32");
        cpu.rmsnormForward(o.c, r.c, x.c, w.c, N, C, 1e-5);
        gpu.rmsnormForward(o.g, r.g, x.g, w.g, N, C, 1e-5);
        const dy = pair(randn(N * C), dt), dx = pair(randn(N * C), dt);
        const dw = pair(randn(C), "f32");
        cpu.rmsnormBackward(dx.c, dw.c, dy.c, x.c, w.c, r.c, N, C);
        gpu.rmsnormBackward(dx.g, dw.g, dy.g, x.g, w.g, r.g, N, C);
        return [
          cmp("out", o, tolFor(dt, F32_EW)),
          cmp("rstd", r, F32_EW),
          cmp("dinp", dx, tolFor(dt, F32_PROD)),
          cmp("dweight(f32)", dw, tolFor(dt, F32_PROD)),
        ];
      });
    }
    for (const layout of ["interleaved", "half"] as RopeLayout[]) {
      for (const HS of [64, 16, 12]) { // 12: HS/2 = 6, the scalar path
        check(`rope ${layout} HS=${HS} (+inverse) [${dt}]`, () => {
          const B = 2, T = sz(128, 6), NH = sz(16, 3), pos = 5, Tmax = 256, half = HS / 2;
          const cosH = new Float32Array(Tmax * half), sinH = new Float32Array(Tmax * half);
          for (let p = 0; p < Tmax; p++) {
            for (let i = 0; i < half; i++) {
              const a = p / Math.pow(10000, (2 * i) / HS);
              cosH[p * half + i] = Math.cos(a);
              sinH[p * half + i] = Math.sin(a);
            }
          }
          const cs = pair(cosH, "f32"), sn = pair(sinH, "f32");
          const x = pair(randn(B * T * NH * HS), dt);
          const orig = gpu.download(x.g);
          cpu.rope(x.c, cs.c, sn.c, B, T, NH, HS, pos, layout, false);
          gpu.rope(x.g, cs.g, sn.g, B, T, NH, HS, pos, layout, false);
          const fwd = cmp("forward", x, tolFor(dt, F32_EW));
          cpu.rope(x.c, cs.c, sn.c, B, T, NH, HS, pos, layout, true);
          gpu.rope(x.g, cs.g, sn.g, B, T, NH, HS, pos, layout, true);
          return [
            fwd,
            cmp("inverse", x, tolFor(dt, F32_EW)),
            cmpArrays("roundtrip", gpu.download(x.g), orig, tolFor(dt, F32_EW)),
          ];
        });
      }
      check(`rope ${layout} at packed positions (+inverse) [${dt}]`, () => {
        const B = 2, T = sz(128, 40), NH = 3, HS = 16, half = HS / 2;
        const cosH = new Float32Array(T * half), sinH = new Float32Array(T * half);
        for (let p = 0; p < T; p++) {
          for (let i = 0; i < half; i++) {
            const a = p / Math.pow(10000, (2 * i) / HS);
            cosH[p * half + i] = Math.cos(a);
            sinH[p * half + i] = Math.sin(a);
          }
        }
        const cs = pair(cosH, "f32"), sn = pair(sinH, "f32");
        const pos = pair(packedIds(B, T).positions, "i32");
        const x = pair(randn(B * T * NH * HS), dt);
        cpu.rope(x.c, cs.c, sn.c, B, T, NH, HS, 0, layout, false, pos.c);
        gpu.rope(x.g, cs.g, sn.g, B, T, NH, HS, 0, layout, false, pos.g);
        const fwd = cmp("forward", x, tolFor(dt, F32_EW));
        cpu.rope(x.c, cs.c, sn.c, B, T, NH, HS, 0, layout, true, pos.c);
        gpu.rope(x.g, cs.g, sn.g, B, T, NH, HS, 0, layout, true, pos.g);
        return [fwd, cmp("inverse", x, tolFor(dt, F32_EW))];
      });
    }
    check(`swiglu fwd/bwd [${dt}]`, () => {
      const n = sz(512 * 2816 + 3, 3003); // 8-element vectors and a ragged tail
      const g = pair(randn(n, 2), dt), u = pair(randn(n), dt), o = zeros(n, dt);
      cpu.swigluForward(o.c, g.c, u.c, n);
      gpu.swigluForward(o.g, g.g, u.g, n);
      const fwd = cmp("forward", o, tolFor(dt, F32_EW));
      const dy = pair(randn(n), dt);
      // dgate/dup alias gate/up, as the model uses them.
      cpu.swigluBackward(g.c, u.c, dy.c, g.c, u.c, n);
      gpu.swigluBackward(g.g, u.g, dy.g, g.g, u.g, n);
      return [
        fwd,
        cmp("dgate (in place)", g, tolFor(dt, F32_EW)),
        cmp("dup (in place)", u, tolFor(dt, F32_EW)),
      ];
    });
    check(`geglu fwd/bwd [${dt}]`, () => {
      const n = sz(512 * 2816 + 3, 3003); // 8-element vectors and a ragged tail
      const g = pair(randn(n, 2), dt), u = pair(randn(n), dt), o = zeros(n, dt);
      cpu.gegluForward(o.c, g.c, u.c, n);
      gpu.gegluForward(o.g, g.g, u.g, n);
      const fwd = cmp("forward", o, tolFor(dt, F32_EW));
      const dy = pair(randn(n), dt);
      // dgate/dup alias gate/up, as the model uses them.
      cpu.gegluBackward(g.c, u.c, dy.c, g.c, u.c, n);
      gpu.gegluBackward(g.g, u.g, dy.g, g.g, u.g, n);
      return [
        fwd,
        cmp("dgate (in place)", g, tolFor(dt, F32_EW)),
        cmp("dup (in place)", u, tolFor(dt, F32_EW)),
      ];
    });
    // V a multiple of 8: the vectorised online-softmax path; V = 300 / 32003: the scalar one;
    for (const V of [sz(32000, 8296), sz(32003, 300)]) { // 8296: two 1024-vector groups
      check(`crossEntropy V=${V} [${dt}]`, () => {
        const N = sz(256, 12);
        const tg = randInt(N, V);
        for (let i = 0; i < N; i += 7) tg[i] = -100;
        const t = pair(tg, "i32"), lg = pair(randn(N * V, 3), dt);
        const ls = zeros(N, "f32"), ls2 = zeros(N, "f32");
        cpu.crossEntropy(ls2.c, null, lg.c, t.c, N, V, 1);
        gpu.crossEntropy(ls2.g, null, lg.g, t.g, N, V, 1);
        const noGrad = cmp("losses (no grad)", ls2, F32_PROD);
        cpu.crossEntropy(ls.c, lg.c, lg.c, t.c, N, V, 1 / 200); // dlogits overwrites logits
        gpu.crossEntropy(ls.g, lg.g, lg.g, t.g, N, V, 1 / 200);
        return [
          noGrad,
          cmp("losses", ls, F32_PROD),
          cmp("dlogits (in place)", lg, tolFor(dt, F32_EW)),
        ];
      });
    }
    check(`distillCrossEntropy V=${sz(32000, 300)} [${dt}]`, () => {
      const N = sz(256, 12), V = sz(32000, 300);
      const tg = randInt(N, V);
      for (let i = 0; i < N; i += 7) tg[i] = -100;
      const t = pair(tg, "i32"), lg = pair(randn(N * V, 3), dt), te = pair(randn(N * V, 3), dt);
      const ls = zeros(N, "f32"), kd = zeros(N, "f32");
      const ls2 = zeros(N, "f32"), kd2 = zeros(N, "f32");
      cpu.distillCrossEntropy(ls2.c, kd2.c, null, lg.c, te.c, t.c, N, V, 0.5, 1);
      gpu.distillCrossEntropy(ls2.g, kd2.g, null, lg.g, te.g, t.g, N, V, 0.5, 1);
      const noGrad = [
        cmp("losses (no grad)", ls2, F32_PROD),
        cmp("KD losses (no grad)", kd2, F32_PROD),
      ];
      // dlogits overwrites the student logits
      cpu.distillCrossEntropy(ls.c, kd.c, lg.c, lg.c, te.c, t.c, N, V, 0.25, 1 / 200);
      gpu.distillCrossEntropy(ls.g, kd.g, lg.g, lg.g, te.g, t.g, N, V, 0.25, 1 / 200);
      return [
        ...noGrad,
        cmp("losses", ls, F32_PROD),
        cmp("KD losses", kd, F32_PROD),
        cmp("dlogits (in place)", lg, tolFor(dt, F32_EW)),
      ];
    });
    check(`kvCacheWrite [${dt}]`, () => {
      const B = 2, T = 7, Tcap = 64, W = 256, pos = 13;
      const cache = pair(randn(B * Tcap * W), dt), src = pair(randn(B * T * W), dt);
      cpu.kvCacheWrite(cache.c, src.c, B, T, Tcap, W, pos);
      gpu.kvCacheWrite(cache.g, src.g, B, T, Tcap, W, pos);
      return [cmp("cache", cache, EXACT)];
    });
  }
  for (const gdt of ["f32", "bf16"] as const) {
    check(`adamw (f32 params/state, ${gdt} grads)`, () => {
      const n = sz(1_000_003, 3001);
      const p = pair(randn(n), "f32"), g = pair(randn(n, 0.1), gdt);
      const m = pair(randn(n, 0.01), "f32"),
        v = pair(new Float32Array(n).map(() => uniform() * 1e-3), "f32");
      for (let step = 1; step <= 3; step++) {
        const hp = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step };
        cpu.adamw(p.c, g.c, m.c, v.c, hp);
        gpu.adamw(p.g, g.g, m.g, v.g, hp);
      }
      return [cmp("params", p, F32_EW), cmp("m", m, F32_EW), cmp("v", v, F32_EW)];
    });
  }
}

/**
 * Segment ids and positions of packed samples, (B, T) each: row b holds samples of 40 + 7b
 * tokens (a segment starting past key 32 leaves a first chunk of keys wholly masked), the
 * last one cut at T; positions restart at 0 in every sample.
 */
function packedIds(B: number, T: number): { segments: Int32Array; positions: Int32Array } {
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

function attentionChecks(): void {
  const train: [number, number, number, number, number][] = SMALL
    ? [[2, 9, 4, 2, 16], [1, 33, 2, 2, 16], [1, 5, 2, 1, 128], [1, 4, 2, 2, 256], [1, 70, 2, 1, 64]]
    : [
      // B, T, NH, NKV, HS
      [2, 256, 16, 4, 64],
      [3, 33, 4, 4, 16], // aidreams260K's head size, ragged T
      [1, 100, 8, 1, 128], // multi-query
      [1, 64, 4, 2, 256], // largest supported head size
    ];
  for (const dt of ["f32", "bf16"] as const) {
    for (const [B, T, NH, NKV, HS] of train) {
      const tag = `B=${B} T=${T} NH=${NH} NKV=${NKV} HS=${HS}`;
      check(`attention fwd+bwd ${tag} [${dt}]`, () => {
        const q = pair(randn(B * T * NH * HS), dt), k = pair(randn(B * T * NKV * HS), dt);
        const v = pair(randn(B * T * NKV * HS), dt);
        const o = zeros(B * T * NH * HS, dt), lse = zeros(B * NH * T, "f32");
        cpu.attentionForward(o.c, lse.c, q.c, k.c, v.c, B, T, T, T, NH, NKV, HS);
        gpu.attentionForward(o.g, lse.g, q.g, k.g, v.g, B, T, T, T, NH, NKV, HS);
        const dy = pair(randn(B * T * NH * HS), dt);
        const dq = zeros(B * T * NH * HS, dt), dk = zeros(B * T * NKV * HS, dt);
        const dv = zeros(B * T * NKV * HS, dt);
        // Both backward passes read the GPU's own forward outputs, so the gradients are
        // compared on identical inputs.
        const oHost = gpu.download(o.g) as Float32Array,
          lHost = gpu.download(lse.g) as Float32Array;
        const out = [cmp("out", o, tolFor(dt, F32_PROD)), cmp("lse", lse, F32_PROD)];
        cpu.upload(o.c, oHost);
        cpu.upload(lse.c, lHost);
        cpu.attentionBackward(dq.c, dk.c, dv.c, dy.c, q.c, k.c, v.c, o.c, lse.c, B, T, NH, NKV, HS);
        gpu.attentionBackward(dq.g, dk.g, dv.g, dy.g, q.g, k.g, v.g, o.g, lse.g, B, T, NH, NKV, HS);
        out.push(cmp("dq", dq, tolFor(dt, F32_PROD)), cmp("dk", dk, tolFor(dt, F32_PROD)));
        out.push(cmp("dv", dv, tolFor(dt, F32_PROD)));
        return out;
      });
    }
    // Packed samples: block-causal by segment ids, forward and backward.
    const [pB, pT, pNH, pNKV, pHS] = SMALL ? [2, 90, 2, 1, 16] : [2, 256, 8, 2, 64];
    check(`attention fwd+bwd packed segments B=${pB} T=${pT} [${dt}]`, () => {
      const [B, T, NH, NKV, HS] = [pB, pT, pNH, pNKV, pHS];
      const seg = pair(packedIds(B, T).segments, "i32");
      const q = pair(randn(B * T * NH * HS), dt), k = pair(randn(B * T * NKV * HS), dt);
      const v = pair(randn(B * T * NKV * HS), dt);
      const o = zeros(B * T * NH * HS, dt), lse = zeros(B * NH * T, "f32");
      cpu.attentionForward(o.c, lse.c, q.c, k.c, v.c, B, T, T, T, NH, NKV, HS, seg.c);
      gpu.attentionForward(o.g, lse.g, q.g, k.g, v.g, B, T, T, T, NH, NKV, HS, seg.g);
      const dy = pair(randn(B * T * NH * HS), dt);
      const dq = zeros(B * T * NH * HS, dt), dk = zeros(B * T * NKV * HS, dt);
      const dv = zeros(B * T * NKV * HS, dt);
      const oHost = gpu.download(o.g) as Float32Array,
        lHost = gpu.download(lse.g) as Float32Array;
      const out = [cmp("out", o, tolFor(dt, F32_PROD)), cmp("lse", lse, F32_PROD)];
      cpu.upload(o.c, oHost);
      cpu.upload(lse.c, lHost);
      cpu.attentionBackward(
        dq.c,
        dk.c,
        dv.c,
        dy.c,
        q.c,
        k.c,
        v.c,
        o.c,
        lse.c,
        B,
        T,
        NH,
        NKV,
        HS,
        seg.c,
      );
      gpu.attentionBackward(
        dq.g,
        dk.g,
        dv.g,
        dy.g,
        q.g,
        k.g,
        v.g,
        o.g,
        lse.g,
        B,
        T,
        NH,
        NKV,
        HS,
        seg.g,
      );
      out.push(cmp("dq", dq, tolFor(dt, F32_PROD)), cmp("dk", dk, tolFor(dt, F32_PROD)));
      out.push(cmp("dv", dv, tolFor(dt, F32_PROD)));
      return out;
    });
    for (const T of [1, 3]) {
      const Tk = sz(100, 40), Tcap = sz(128, 48);
      check(`attention decode T=${T} Tk=${Tk} Tcap=${Tcap} [${dt}]`, () => {
        const B = 2, NH = sz(8, 4), NKV = 2, HS = 64;
        const q = pair(randn(B * T * NH * HS), dt);
        const k = pair(randn(B * Tcap * NKV * HS), dt), v = pair(randn(B * Tcap * NKV * HS), dt);
        const o = zeros(B * T * NH * HS, dt), lse = zeros(B * NH * T, "f32");
        cpu.attentionForward(o.c, lse.c, q.c, k.c, v.c, B, T, Tk, Tcap, NH, NKV, HS);
        gpu.attentionForward(o.g, lse.g, q.g, k.g, v.g, B, T, Tk, Tcap, NH, NKV, HS);
        return [cmp("out", o, tolFor(dt, F32_PROD)), cmp("lse", lse, F32_PROD)];
      });
    }
  }
}

/** The opt-in tiled attention forward (TUNE_CUDA_ATTN=tiled) against the CPU. */
function tiledAttentionChecks(): void {
  if (selfTest || !selected("tiled")) return;
  // A trailing 1 marks a packed (segment ids) case.
  const shapes: [number, number, number, number, number, number, number, number?][] = SMALL
    ? [[2, 9, 9, 9, 4, 2, 16], [1, 35, 35, 35, 2, 2, 16], [2, 3, 40, 48, 4, 2, 64], [
      2,
      90,
      90,
      90,
      2,
      1,
      16,
      1,
    ]]
    : [
      [2, 256, 256, 256, 8, 2, 64, 1], // packed
      // B, T, Tk, Tcap, NH, NKV, HS
      [2, 256, 256, 256, 16, 4, 64],
      [3, 33, 33, 33, 4, 4, 16],
      [1, 100, 100, 100, 8, 1, 128],
      [2, 1, 100, 128, 8, 2, 64], // decode
      [2, 3, 100, 128, 8, 2, 128],
    ];
  for (const dt of ["f32", "bf16"] as const) {
    for (const [B, T, Tk, Tcap, NH, NKV, HS, packed] of shapes) {
      const segH = packed ? packedIds(B, T).segments : null;
      check(
        `attention tiled fwd B=${B} T=${T} Tk=${Tk} NH=${NH} NKV=${NKV} HS=${HS}${
          packed ? " packed" : ""
        } [${dt}]`,
        () => {
          const be = createCudaBackend({ attention: "tiled" });
          const host = (n: number) => {
            const h = randn(n);
            if (dt === "bf16") roundArrayBf16(h, h.slice());
            return h;
          };
          const q = host(B * T * NH * HS), k = host(B * Tcap * NKV * HS);
          const v = host(B * Tcap * NKV * HS);
          const g = (h: Float32Array) => {
            const x = be.alloc(h.length, dt);
            be.upload(x, h);
            return x;
          };
          const og = be.alloc(B * T * NH * HS, dt), lg = be.alloc(B * NH * T, "f32");
          const sg = segH === null ? null : be.alloc(B * T, "i32");
          if (sg !== null) be.upload(sg, segH!);
          be.attentionForward(og, lg, g(q), g(k), g(v), B, T, Tk, Tcap, NH, NKV, HS, sg);
          const got = be.download(og), gotL = be.download(lg);
          be.destroy();
          const c = (h: Float32Array) => {
            const x = cpu.alloc(h.length);
            cpu.upload(x, h);
            return x;
          };
          const oc = cpu.alloc(B * T * NH * HS), lc = cpu.alloc(B * NH * T);
          const sc = segH === null ? null : cpu.alloc(B * T, "i32");
          if (sc !== null) cpu.upload(sc, segH!);
          cpu.attentionForward(oc, lc, c(q), c(k), c(v), B, T, Tk, Tcap, NH, NKV, HS, sc);
          return [
            cmpArrays("out", got, cpu.download(oc), tolFor(dt, F32_PROD)),
            cmpArrays("lse", gotL, cpu.download(lc), F32_PROD),
          ];
        },
      );
    }
  }
}

/**
 * The tensor-core kernels (kernels/flash_attention.cu, the default for bf16 at head size 64
 * or 128) against the general kernels (TUNE_CUDA_ATTN=simple, themselves checked against
 * the CPU above) at training sizes too large for the CPU oracle: forward and backward,
 * causal and packed, and a decode step against a KV cache. bf16 tolerances.
 */
function flashAttentionChecks(): void {
  if (selfTest || !selected("flash")) return;
  // B, T, Tk, Tcap, NH, NKV, HS, packed
  const shapes: [number, number, number, number, number, number, number, boolean][] = SMALL
    ? [[1, 130, 130, 130, 2, 1, 64, false], [1, 80, 80, 80, 2, 1, 64, true], [
      1,
      2,
      70,
      72,
      2,
      1,
      64,
      false,
    ]]
    : [
      [2, 2048, 2048, 2048, 32, 8, 64, false], // Llama-3.2-1B attention at the benchmark's T
      [1, 1000, 1000, 1000, 32, 8, 128, false], // Llama-3-8B head size, ragged T
      [2, 1024, 1024, 1024, 16, 4, 64, true], // packed samples
      [2, 3, 700, 768, 32, 8, 128, false], // decode against a KV cache
    ];
  for (const [B, T, Tk, Tcap, NH, NKV, HS, packed] of shapes) {
    const name = `attention flash vs general B=${B} T=${T} Tk=${Tk} NH=${NH} NKV=${NKV} HS=${HS}${
      packed ? " packed" : ""
    } [bf16]`;
    check(name, () => {
      const flash = gpu as unknown as CudaBackend;
      const general = createCudaBackend({ attention: "simple" });
      const bufs: DeviceBuffer[] = [];
      const alloc = (n: number, dt: DType) => {
        const x = flash.alloc(n, dt);
        bufs.push(x);
        return x;
      };
      try {
        const up = (n: number) => {
          const x = alloc(n, "bf16");
          flash.upload(x, randn(n));
          return x;
        };
        const q = up(B * T * NH * HS), k = up(B * Tcap * NKV * HS), v = up(B * Tcap * NKV * HS);
        const seg = packed ? alloc(B * T, "i32") : null;
        if (seg !== null) flash.upload(seg, packedIds(B, T).segments);
        const outs = [0, 1].map(() => ({
          o: alloc(B * T * NH * HS, "bf16"),
          l: alloc(B * NH * T, "f32"),
        }));
        flash.attentionForward(outs[0].o, outs[0].l, q, k, v, B, T, Tk, Tcap, NH, NKV, HS, seg);
        general.attentionForward(outs[1].o, outs[1].l, q, k, v, B, T, Tk, Tcap, NH, NKV, HS, seg);
        const res: Outcome[] = [
          cmpArrays("out", flash.download(outs[0].o), general.download(outs[1].o), BF16),
          cmpArrays("lse", flash.download(outs[0].l), general.download(outs[1].l), F32_PROD),
        ];
        if (T === Tk) {
          const dy = up(B * T * NH * HS);
          const grads = [0, 1].map(() => ({
            dq: alloc(B * T * NH * HS, "bf16"),
            dk: alloc(B * T * NKV * HS, "bf16"),
            dv: alloc(B * T * NKV * HS, "bf16"),
          }));
          // Both read the general forward's outputs, so only the backward kernels differ.
          const { o, l } = outs[1];
          const [a, b] = grads;
          flash.attentionBackward(a.dq, a.dk, a.dv, dy, q, k, v, o, l, B, T, NH, NKV, HS, seg);
          general.attentionBackward(b.dq, b.dk, b.dv, dy, q, k, v, o, l, B, T, NH, NKV, HS, seg);
          for (const w of ["dq", "dk", "dv"] as const) {
            res.push(cmpArrays(w, flash.download(a[w]), general.download(b[w]), FLASH_GRAD));
          }
        }
        return res;
      } finally {
        general.destroy();
        for (const x of bufs) flash.free(x);
      }
    });
  }
}

// ---- model checks ------------------------------------------------------------------------

async function modelChecks(): Promise<void> {
  const { createLlama } = await import("../src/models/llama/model.ts");
  const { readLlama2c } = await import("../src/checkpoint/llama2c.ts");
  // ../shared beside the checkout, or TUNE_SHARED_DIR where it was carried elsewhere.
  const sharedRoot = Deno.env.get("TUNE_SHARED_DIR") ??
    new URL("../../shared/", import.meta.url).pathname;
  const shared = `${sharedRoot.replace(/\/$/, "")}/models/aidreams260K/`;
  const ref = Deno.readTextFileSync(`${shared}reference.jsonl`).trim().split("\n").map((l) =>
    JSON.parse(l)
  );

  check("aidreams260K mean cross-entropy (fp32 on GPU)", () => {
    const m = readLlama2c(`${shared}model.bin`);
    const c = ref.find((r) => r.case === "loss");
    const rows = c.tokens as number[][];
    const B = rows.length, T = rows[0].length - 1;
    const inputs = new Int32Array(B * T), labels = new Int32Array(B * T);
    rows.forEach((r, b) => {
      inputs.set(r.slice(0, T), b * T);
      labels.set(r.slice(1), b * T);
    });
    const out: Outcome[] = [];
    for (const [name, be] of [["gpu", gpu], ["cpu", cpu]] as [string, Backend][]) {
      const model = createLlama(be, { name: "aidreams260K", config: m.config, lora: null }, {
        batch: B,
        seqLen: T,
      });
      model.loadStateDict(m.stateDict);
      const r = model.loss(inputs, labels);
      out.push(cmpArrays(`${name} mean CE`, [r.lossSum / r.tokens], [c.mean_cross_entropy], {
        atol: 1e-4,
        rtol: 0,
      }));
      model.free();
    }
    return out;
  });

  check("aidreams260K greedy generation vs reference", () => {
    const m = readLlama2c(`${shared}model.bin`);
    const c = ref.find((r) => r.case === "greedy");
    const want = c.ids as number[];
    const model = createLlama(gpu, { name: "aidreams260K", config: m.config, lora: null }, {
      batch: 1,
      seqLen: 8,
    });
    model.loadStateDict(m.stateDict);
    const prompt = Int32Array.from(c.prompt_ids as number[]);
    model.setupCaches(1, prompt.length + c.max_new_tokens);
    const ids = [...prompt];
    let logits = model.prefill(prompt);
    for (let i = 0; i < c.max_new_tokens; i++) {
      const l = gpu.download(logits) as Float32Array;
      let best = 0;
      for (let j = 1; j < l.length; j++) if (l[j] > l[best]) best = j;
      ids.push(best);
      if (i + 1 < c.max_new_tokens) logits = model.decodeStep(Int32Array.of(best));
    }
    model.free();
    let same = 0;
    while (same < want.length && ids[same] === want[same]) same++;
    return [{
      label: "ids",
      ok: same === want.length && ids.length === want.length,
      detail: `${same}/${want.length} tokens match the reference`,
    }];
  });

  // fp32 on the GPU against the CPU at fp32 tolerances, then bf16 activations (and a bf16
  // frozen base under LoRA), as the recipes run with dtype=bf16, at STYLE.md's bf16 tolerance.
  for (
    const [kind, act] of [
      ["full", "f32"],
      ["lora", "f32"],
      ["full", "bf16"],
      [
        "lora",
        "bf16",
      ],
      ["dora", "f32"],
      ["dora", "bf16"],
    ] as const
  ) {
    const tag = act === "bf16" ? " [bf16 activations]" : "";
    check(`tiny Llama one step (${kind}): loss and every gradient, CUDA vs CPU${tag}`, () => {
      const fx = fixtureModule.loadFixture(`model_train_${kind}`);
      const N = fx.meta("B") * fx.meta("T");
      const tokens: Int32Array = fx.i32("tokens").subarray(0, N);
      const targets: Int32Array = fx.i32("targets").subarray(0, N);
      const lora = kind === "full"
        ? null
        : { ...helperModule.fixtureLora(fx), ...(kind === "dora" ? { useDora: true } : {}) };
      const sd = helperModule.prefixedStateDict(fx, "w.");
      // DoRA starts from the trained adapters (B != 0, magnitudes != ||W||): every term counts
      const from = kind === "dora" ? "final." : "init.";
      if (lora) { for (const [n, t] of helperModule.prefixedStateDict(fx, from)) sd.set(n, t); }
      const run = (be: Backend, dt: "f32" | "bf16") => {
        const model = createLlama(be, {
          name: `tiny_${kind}`,
          config: helperModule.fixtureConfig(fx),
          lora,
        }, {
          batch: fx.meta("B"),
          seqLen: fx.meta("T"),
          seed: lora?.seed ?? 0,
          activationDtype: dt,
          frozenDtype: lora ? dt : "f32",
        });
        model.loadStateDict(sd);
        model.zeroGrad();
        const r = model.lossAndBackward(tokens, targets, 1 / N);
        const grads = be.download(model.trainable.grads!) as Float32Array;
        model.free();
        return { loss: r.lossSum / r.tokens, grads };
      };
      const g = run(gpu, act), c = run(cpu, "f32");
      if (act === "bf16") {
        // The elementwise bf16 tolerance is loose next to gradients this small, so the whole
        // gradient must also agree in direction and size: relative L2 error under 5%.
        let dd = 0, cc = 0;
        for (let i = 0; i < c.grads.length; i++) {
          dd += (g.grads[i] - c.grads[i]) ** 2;
          cc += c.grads[i] ** 2;
        }
        const rel = Math.sqrt(dd / cc);
        return [
          cmpArrays("loss", [g.loss], [c.loss], BF16),
          cmpArrays(`${g.grads.length} gradients`, g.grads, c.grads, BF16),
          {
            label: "gradient relative L2",
            ok: rel <= 0.05,
            detail: `${rel.toExponential(2)} (limit 5.00e-2)`,
          },
        ];
      }
      return [
        cmpArrays("loss", [g.loss], [c.loss], { atol: 1e-5, rtol: 1e-4 }),
        cmpArrays(`${g.grads.length} gradients`, g.grads, c.grads, F32_PROD),
      ];
    });
  }

  // A DPO micro-batch as lora_dpo_single_device runs it: the reference (adapters off) and
  // the policy's weighted backward, each backend weighing with its own sequence losses.
  const { preferenceLoss } = await import("../src/rlhf/preference_loss.ts");
  const { sequenceWeights, countedPerSequence } = await import("../src/rlhf/preference_step.ts");
  for (const act of ["f32", "bf16"] as const) {
    const tag = act === "bf16" ? " [bf16 activations]" : "";
    check(
      `tiny Llama DPO step (lora): sequence log-probs and adapter gradients, CUDA vs CPU${tag}`,
      () => {
        const fx = fixtureModule.loadFixture("model_train_dpo");
        const P = fx.meta("P"), N = 2 * P * fx.meta("T");
        const tokens: Int32Array = fx.i32("tokens").subarray(0, N);
        const targets: Int32Array = fx.i32("targets").subarray(0, N);
        const lora = helperModule.fixtureLora(fx);
        const sd = helperModule.prefixedStateDict(fx, "w.");
        for (const [n, t] of helperModule.prefixedStateDict(fx, "init.")) sd.set(n, t);
        const hp = fx.meta("hp");
        const neg = (a: Float64Array) => a.map((x) => -x);
        const run = (be: Backend, dt: "f32" | "bf16") => {
          const model = createLlama(be, {
            name: "tiny_dpo",
            config: helperModule.fixtureConfig(fx),
            lora,
          }, {
            batch: 2 * P,
            seqLen: fx.meta("T"),
            seed: lora.seed,
            activationDtype: dt,
            frozenDtype: dt,
          });
          model.loadStateDict(sd);
          model.zeroGrad();
          const ref = model.withAdaptersDisabled(() => model.sequenceLosses(tokens, targets));
          const r = model.weightedLossAndBackward(tokens, targets, (seqLoss) =>
            sequenceWeights(
              preferenceLoss({ kind: "dpo", beta: hp.beta, labelSmoothing: hp.label_smoothing }, {
                policyChosen: neg(seqLoss.subarray(0, P)),
                policyRejected: neg(seqLoss.subarray(P)),
                referenceChosen: neg(ref.subarray(0, P)),
                referenceRejected: neg(ref.subarray(P)),
              }),
              countedPerSequence(targets, 2 * P),
              false,
              P,
            ));
          const grads = be.download(model.trainable.grads!) as Float32Array;
          model.free();
          return { ref: Array.from(ref), pol: Array.from(r.seqLoss), grads };
        };
        const g = run(gpu, act), c = run(cpu, "f32");
        const tol = act === "bf16" ? BF16 : F32_PROD;
        return [
          cmpArrays("reference sequence losses", g.ref, c.ref, tol),
          cmpArrays("policy sequence losses", g.pol, c.pol, tol),
          cmpArrays(`${g.grads.length} adapter gradients`, g.grads, c.grads, tol),
        ];
      },
    );
  }

  // A distillation micro-batch as knowledge_distillation_single_device runs it: the teacher's
  // forward, then the LoRA student's class + KD loss and backward.
  for (const act of ["f32", "bf16"] as const) {
    const tag = act === "bf16" ? " [bf16 activations]" : "";
    check(
      `tiny Llama KD step (lora student, full teacher): losses and adapter gradients, CUDA vs CPU${tag}`,
      () => {
        const fx = fixtureModule.loadFixture("model_train_kd");
        const N = fx.meta("B") * fx.meta("T");
        const tokens: Int32Array = fx.i32("tokens").subarray(0, N);
        const targets: Int32Array = fx.i32("targets").subarray(0, N);
        const lora = helperModule.fixtureLora(fx);
        const sd = helperModule.prefixedStateDict(fx, "w.");
        for (const [n, t] of helperModule.prefixedStateDict(fx, "init.")) sd.set(n, t);
        const tfx = { ...fx, meta: (k: string) => fx.meta(k === "config" ? "teacher_config" : k) };
        const run = (be: Backend, dt: "f32" | "bf16") => {
          const dims = { batch: fx.meta("B"), seqLen: fx.meta("T"), activationDtype: dt };
          const student = createLlama(be, {
            name: "student",
            config: helperModule.fixtureConfig(fx),
            lora,
          }, { ...dims, seed: lora.seed, frozenDtype: dt });
          student.loadStateDict(sd);
          const teacher = createLlama(be, {
            name: "teacher",
            config: helperModule.fixtureConfig(tfx),
            lora: null,
          }, { ...dims, training: false });
          teacher.loadStateDict(helperModule.prefixedStateDict(fx, "teacher."));
          student.zeroGrad();
          const r = student.distillLossAndBackward(tokens, targets, 1 / N, {
            teacherLogits: teacher.forward(tokens),
            kdRatio: 0.5,
          });
          const grads = be.download(student.trainable.grads!) as Float32Array;
          student.free();
          teacher.free();
          return { ce: r.lossSum / r.tokens, kd: r.kdLossSum / r.tokens, grads };
        };
        const g = run(gpu, act), c = run(cpu, "f32");
        const tol = act === "bf16" ? BF16 : F32_PROD;
        return [
          cmpArrays("class loss", [g.ce], [c.ce], tol),
          cmpArrays("KD loss", [g.kd], [c.kd], tol),
          cmpArrays(`${g.grads.length} adapter gradients`, g.grads, c.grads, tol),
        ];
      },
    );
  }

  // Gemma 1 (GeGLU, embeddings x sqrt(dim), 1 + scale norms, head_dim != dim / heads, one
  // kv head, tied): the tiny GemmaForCausalLM of tests/reference/gemma_reference.py. fp32 on the
  // GPU against PyTorch's loss and gradients; bf16 activations (and a bf16 frozen base under
  // LoRA) against the CPU; KV-cache greedy decoding on the GPU against the CPU.
  const { loadHfCheckpoint } = await import("../src/checkpoint/hf_checkpoint.ts");
  const { convertRopeLayout } = await import("../src/checkpoint/rope_permute.ts");
  const { tuneToHf } = await import("../src/checkpoint/key_mapping.ts");
  type LoraAttnModule = "q_proj" | "k_proj" | "v_proj" | "output_proj";
  const gemmaDir = new URL("../tests/fixtures/checkpoint_hf_gemma", import.meta.url).pathname;
  const gemmaStep = (be: Backend, dt: "f32" | "bf16", lora: boolean) => {
    const hf = loadHfCheckpoint(gemmaDir);
    const fx = fixtureModule.loadFixture("checkpoint_hf_gemma_expected");
    const tokens: Int32Array = fx.i32("train_tokens"),
      targets: Int32Array = fx.i32("train_targets");
    const loraConfig = lora
      ? {
        attnModules: ["q_proj", "k_proj", "v_proj", "output_proj"] as LoraAttnModule[],
        applyToMlp: true,
        applyToOutput: false,
        rank: 4,
        alpha: 8,
        dropout: 0,
      }
      : null;
    const model = createLlama(be, { name: "tiny_gemma", config: hf.config, lora: loraConfig }, {
      batch: 2,
      seqLen: 6,
      seed: 3,
      activationDtype: dt,
      frozenDtype: lora ? dt : "f32",
    });
    model.loadStateDict(hf.stateDict);
    if (lora) {
      // non-zero B so every adapter gradient is non-trivial (the same values on both backends)
      const sd = model.adapterStateDict();
      for (const [n, t] of sd) {
        if (n.includes("lora_b")) t.data.forEach((_, i) => t.data[i] = Math.cos(i) * 0.05);
      }
      model.loadStateDict(new Map([...hf.stateDict, ...sd]));
    }
    model.zeroGrad();
    let count = 0;
    for (const t of targets) if (t !== -100) count++;
    const r = model.lossAndBackward(tokens, targets, 1 / count);
    const named = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const name of model.trainableNames()) {
      const e = model.trainable.layout.get(name);
      named.set(name, {
        shape: [...e.shape],
        data: (be.download(model.trainable.grad(name)!) as Float32Array).slice(),
      });
    }
    const grads = be.download(model.trainable.grads!) as Float32Array;
    model.free();
    return { loss: r.lossSum / r.tokens, grads, named, config: hf.config, fx };
  };
  check("tiny Gemma one step (full) vs PyTorch: loss and every gradient (fp32 on GPU)", () => {
    const g = gemmaStep(gpu, "f32", false);
    const half = convertRopeLayout(g.named, g.config, "half");
    const out: Outcome[] = [
      cmpArrays("loss", [g.loss], g.fx.f32("loss"), { atol: 1e-4, rtol: 1e-3 }),
    ];
    let worst = 0;
    let bad: Outcome | null = null;
    for (const [name, t] of half) {
      const o = cmpArrays(name, t.data, g.fx.f32(`grad.${tuneToHf(name)}`), {
        atol: 1e-4,
        rtol: 1e-3,
      });
      if (!o.ok && bad === null) bad = o;
      const ref = g.fx.f32(`grad.${tuneToHf(name)}`);
      for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(t.data[i] - ref[i]));
    }
    out.push(
      bad ?? {
        label: `${half.size} gradients`,
        ok: true,
        detail: `max|diff| ${worst.toExponential(2)} (atol 1e-4 rtol 1e-3)`,
      },
    );
    return out;
  });
  for (const lora of [false, true]) {
    const kind = lora ? "lora" : "full";
    check(
      `tiny Gemma one step (${kind}): loss and every gradient, CUDA vs CPU [bf16 activations]`,
      () => {
        const g = gemmaStep(gpu, "bf16", lora), c = gemmaStep(cpu, "f32", lora);
        let dd = 0, cc = 0;
        for (let i = 0; i < c.grads.length; i++) {
          dd += (g.grads[i] - c.grads[i]) ** 2;
          cc += c.grads[i] ** 2;
        }
        const rel = Math.sqrt(dd / cc);
        return [
          cmpArrays("loss", [g.loss], [c.loss], BF16),
          {
            label: `${c.grads.length} gradients, relative L2`,
            ok: rel <= 0.05,
            detail: `${rel.toExponential(2)} (limit 5.00e-2)`,
          },
        ];
      },
    );
  }
  check("tiny Gemma KV-cache greedy decoding, CUDA vs CPU (fp32)", () => {
    const hf = loadHfCheckpoint(gemmaDir);
    const prompt = Int32Array.of(12, 25, 6, 37);
    const steps = 8;
    const run = (be: Backend) => {
      const model = createLlama(be, { name: "tiny_gemma", config: hf.config, lora: null }, {
        batch: 1,
        seqLen: prompt.length,
        training: false,
      });
      model.loadStateDict(hf.stateDict);
      model.setupCaches(1, prompt.length + steps);
      const ids: number[] = [];
      const all: number[] = [];
      let logits = model.prefill(prompt);
      for (let i = 0; i < steps; i++) {
        const l = be.download(logits) as Float32Array;
        all.push(...l);
        let best = 0;
        for (let j = 1; j < l.length; j++) if (l[j] > l[best]) best = j;
        ids.push(best);
        if (i + 1 < steps) logits = model.decodeStep(Int32Array.of(best));
      }
      model.free();
      return { ids, all };
    };
    const g = run(gpu), c = run(cpu);
    return [
      cmpArrays("logits of every step", g.all, c.all, F32_PROD),
      {
        label: "greedy ids",
        ok: g.ids.join() === c.ids.join(),
        detail: `gpu ${g.ids.join(" ")} / cpu ${c.ids.join(" ")}`,
      },
    ];
  });

  check("tiny Llama 10-step AdamW training vs PyTorch fixture (fp32 on GPU)", () => {
    // The recipe of tests/model_train_test.ts, run on the GPU.
    const { loadFixtureSync, trainFixture } = tinyTraining;
    const fx = loadFixtureSync();
    const g = trainFixture(gpu, fx, createLlama);
    const ref = fx.f32("losses");
    const refNorms = fx.f32("grad_norms");
    return [
      cmpArrays("losses", g.losses, ref, { atol: 1e-4, rtol: 0 }),
      cmpArrays("grad norms", g.norms, refNorms, { atol: 0, rtol: 1e-3 }),
    ];
  });
}

/** The training loop of tests/model_train_test.ts (full fine-tune), backend-agnostic. */
const tinyTraining = {
  loadFixtureSync() {
    return fixtureModule.loadFixture("model_train_full");
  },
  trainFixture(
    be: Backend,
    // deno-lint-ignore no-explicit-any
    fx: any,
    // deno-lint-ignore no-explicit-any
    createLlama: any,
  ): { losses: number[]; norms: number[] } {
    const hp = fx.meta("hp");
    const steps = fx.meta("steps"), micro = fx.meta("micro");
    const N = fx.meta("B") * fx.meta("T");
    const tokens: Int32Array = fx.i32("tokens"), targets: Int32Array = fx.i32("targets");
    const model = createLlama(be, {
      name: "tiny",
      config: helperModule.fixtureConfig(fx),
      lora: null,
    }, {
      batch: fx.meta("B"),
      seqLen: fx.meta("T"),
    });
    model.loadStateDict(helperModule.prefixedStateDict(fx, "w."));
    const opt = new optimModule.AdamW(be, model.trainable, {
      lr: hp.lr,
      betas: hp.betas,
      eps: hp.eps,
      weightDecay: hp.weight_decay,
    });
    const sched = new schedModule.LrScheduler(
      { numWarmupSteps: hp.warmup, numCycles: 0.5 },
      hp.lr,
      steps,
    );
    const losses: number[] = [], norms: number[] = [];
    for (let s = 0; s < steps; s++) {
      const mb = (j: number) => (s * micro + j) * N;
      let ntok = 0;
      for (let j = 0; j < micro; j++) {
        for (const t of targets.subarray(mb(j), mb(j) + N)) if (t !== -100) ntok++;
      }
      model.zeroGrad();
      let sum = 0;
      for (let j = 0; j < micro; j++) {
        sum += model.lossAndBackward(
          tokens.subarray(mb(j), mb(j) + N),
          targets.subarray(mb(j), mb(j) + N),
          1 / ntok,
        ).lossSum;
      }
      norms.push(clipModule.clipGradNorm(be, model.trainable, hp.max_norm));
      opt.step(sched.lrAt(s));
      losses.push(sum / ntok);
    }
    model.free();
    return { losses, norms };
  },
};

// Modules of the training section, loaded only when it runs.
// deno-lint-ignore no-explicit-any
let fixtureModule: any, helperModule: any, optimModule: any, schedModule: any, clipModule: any;

// ---- PyTorch on the same GPU (when python3 has torch with CUDA) ------------------------------

const TORCH_SCRIPT = `
import sys, numpy as np, torch, torch.nn.functional as F
d, case = sys.argv[1], sys.argv[2]
def rd(n, *shape): return torch.from_numpy(np.fromfile(f"{d}/{n}", dtype=np.float32).reshape(*shape)).cuda()
def wr(n, t): t.detach().float().cpu().numpy().astype(np.float32).tofile(f"{d}/{n}")
m = [int(x) for x in sys.argv[3:]]
if case == "matmul":
    M, K, N = m
    wr("out", rd("x", M, K).bfloat16() @ rd("w", N, K).bfloat16().t())
elif case == "attention":
    B, T, NH, NKV, HS = m
    q = rd("q", B, T, NH, HS).bfloat16().transpose(1, 2)
    k = rd("k", B, T, NKV, HS).bfloat16().transpose(1, 2).repeat_interleave(NH // NKV, dim=1)
    v = rd("v", B, T, NKV, HS).bfloat16().transpose(1, 2).repeat_interleave(NH // NKV, dim=1)
    wr("out", F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2))
elif case == "cross_entropy":
    N, V = m
    t = torch.from_numpy(np.fromfile(f"{d}/t", dtype=np.int32).astype(np.int64)).cuda()
    wr("out", F.cross_entropy(rd("logits", N, V), t, ignore_index=-100, reduction="none"))
print("torch", torch.__version__, torch.cuda.get_device_name())
`;

/** Run TORCH_SCRIPT's `case` on the GPU with inputs written to a temp dir; its output. */
function torchRun(
  files: Record<string, Float32Array | Int32Array>,
  kase: string,
  dims: number[],
  outLen: number,
): Float32Array {
  const dir = Deno.makeTempDirSync({ prefix: "tune_torch_" });
  try {
    for (const [n, a] of Object.entries(files)) {
      Deno.writeFileSync(`${dir}/${n}`, new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    }
    const r = new Deno.Command("python3", {
      args: ["-c", TORCH_SCRIPT, dir, kase, ...dims.map(String)],
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    if (!r.success) {
      const err = new TextDecoder().decode(r.stderr).trim().split("\n").slice(-3).join(" | ");
      throw new Error(`python3 (torch) failed: ${err}`);
    }
    const out = new Float32Array(Deno.readFileSync(`${dir}/out`).buffer);
    if (out.length !== outLen) {
      throw new Error(`torch wrote ${out.length} values, expected ${outLen}`);
    }
    return out;
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

function torchAvailable(): boolean {
  try {
    return new Deno.Command("python3", {
      args: ["-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"],
      stdout: "null",
      stderr: "null",
    }).outputSync().success;
  } catch {
    return false;
  }
}

function torchChecks(): void {
  if (selfTest || SMALL || !selected("torch")) return;
  if (!torchAvailable()) {
    console.log("skip  PyTorch comparison: python3 with torch and CUDA not found");
    return;
  }
  const bf = (a: Float32Array) => {
    const r = new Float32Array(a.length);
    roundArrayBf16(r, a);
    return r;
  };
  check("torch: matmul bf16 512x1024x2816", () => {
    const M = 512, K = 1024, N = 2816;
    const x = bf(randn(M * K)), w = bf(randn(N * K, 1 / 32));
    const xg = gpu.alloc(M * K, "bf16"), wg = gpu.alloc(N * K, "bf16");
    const og = gpu.alloc(M * N, "bf16");
    gpu.upload(xg, x);
    gpu.upload(wg, w);
    gpu.matmulForward(og, xg, wg, null, M, K, N);
    const got = gpu.download(og);
    for (const b of [xg, wg, og]) gpu.free(b);
    const ref = torchRun({ x, w }, "matmul", [M, K, N], M * N);
    return [cmpArrays("out vs torch", got, ref, BF16)];
  });
  check("torch: attention bf16 B=2 T=256 NH=16 NKV=4 HS=64", () => {
    const B = 2, T = 256, NH = 16, NKV = 4, HS = 64;
    const q = bf(randn(B * T * NH * HS)), k = bf(randn(B * T * NKV * HS));
    const v = bf(randn(B * T * NKV * HS));
    const buf = (h: Float32Array) => {
      const g = gpu.alloc(h.length, "bf16");
      gpu.upload(g, h);
      return g;
    };
    const qg = buf(q), kg = buf(k), vg = buf(v);
    const og = gpu.alloc(B * T * NH * HS, "bf16"), lg = gpu.alloc(B * NH * T, "f32");
    gpu.attentionForward(og, lg, qg, kg, vg, B, T, T, T, NH, NKV, HS);
    const got = gpu.download(og);
    for (const b of [qg, kg, vg, og, lg]) gpu.free(b);
    const ref = torchRun({ q, k, v }, "attention", [B, T, NH, NKV, HS], B * T * NH * HS);
    return [cmpArrays("out vs torch", got, ref, BF16)];
  });
  check("torch: crossEntropy f32 N=256 V=32000", () => {
    const N = 256, V = 32000;
    const logits = randn(N * V, 3), t = randInt(N, V);
    for (let i = 0; i < N; i += 7) t[i] = -100;
    const lg = gpu.alloc(N * V, "f32"), tg = gpu.alloc(N, "i32"), ls = gpu.alloc(N, "f32");
    gpu.upload(lg, logits);
    gpu.upload(tg, t);
    gpu.crossEntropy(ls, null, lg, tg, N, V, 1);
    const got = gpu.download(ls);
    for (const b of [lg, tg, ls]) gpu.free(b);
    const ref = torchRun({ logits, t }, "cross_entropy", [N, V], N);
    return [cmpArrays("losses vs torch", got, ref, F32_PROD)];
  });
}

// ---- NCCL at world size 1 --------------------------------------------------------------------

/** src/backend/cuda/nccl_collectives.ts on a communicator of one rank (bindings, calls). */
async function ncclChecks(): Promise<void> {
  const name = "NCCL collectives at world size 1 (distributed NcclCollectives)";
  if (selfTest || !selected("NCCL")) return;
  const t0 = performance.now();
  try {
    try {
      ncclUniqueId();
    } catch (e) {
      if (e instanceof TuneError) {
        console.log(`skip  ${name}: ${e.message}`);
        return;
      }
      throw e;
    }
    const { initProcessGroup } = await import("../src/distributed/process_group.ts");
    const { NcclCollectives } = await import("../src/backend/cuda/nccl_collectives.ts");
    const group = await initProcessGroup();
    const nccl = new NcclCollectives(group);
    const be = createCudaBackend({ collectives: nccl });
    await nccl.init();
    const n = 4099;
    const host = randn(n);
    const a = be.alloc(n, "f32"), b = be.alloc(n, "bf16"), o = be.alloc(n, "f32");
    be.upload(a, host);
    be.upload(b, host);
    await nccl.allReduceSum(a);
    await nccl.allReduceSum(b);
    await nccl.broadcast(a, 0);
    await nccl.allGather(o, a);
    const wantBf = host.slice();
    roundArrayBf16(wantBf, host);
    const out = [
      cmpArrays("allReduceSum f32", be.download(a), host, EXACT),
      cmpArrays("allReduceSum bf16", be.download(b), wantBf, EXACT),
      cmpArrays("allGather", be.download(o), host, EXACT),
    ];
    be.fill(o, 0);
    await nccl.reduceScatterSum(o, a);
    await nccl.barrier();
    out.push(cmpArrays("reduceScatterSum", be.download(o), host, EXACT));
    nccl.destroy();
    be.destroy();
    await group.close();
    const ok = out.every((x) => x.ok);
    results.push({ name, ok });
    const body = out.map((x) => `${x.label}: ${x.detail}`).join("; ");
    const ms = (performance.now() - t0).toFixed(0);
    console.log(`${ok ? "PASS" : "FAIL"}  ${name} ${body}  [${ms} ms]`);
  } catch (e) {
    results.push({ name, ok: false });
    console.log(`FAIL  ${name} error: ${e instanceof Error ? (e.stack ?? e.message) : e}`);
  }
}

// ---- timings (information only, never pass/fail) -------------------------------------------

function timings(): void {
  if (selfTest || SMALL || !selected("timing")) return;
  const g = gpu as unknown as CudaBackend;
  try {
    const n = 4096;
    const a = g.alloc(n * n, "bf16"), b = g.alloc(n * n, "bf16"), c = g.alloc(n * n, "bf16");
    g.matmulForward(c, a, b, null, n, n, n); // warm-up: heuristic + first launch
    const ms = g.timeMs(() => {
      for (let i = 0; i < 10; i++) g.matmulForward(c, a, b, null, n, n, n);
    }) / 10;
    console.log(
      `info  matmul bf16 ${n}^3: ${ms.toFixed(3)} ms, ${
        (2 * n ** 3 / ms / 1e9).toFixed(0)
      } TFLOP/s`,
    );
    for (const buf of [a, b, c]) g.free(buf);
    for (const [B, T, NH, NKV, HS] of [[4, 1024, 32, 8, 128], [4, 2048, 32, 8, 64]]) {
      attentionTiming(g, B, T, NH, NKV, HS);
    }
  } catch (e) {
    console.log(`info  timings failed: ${(e as Error).message}`);
  }
}

/** Forward and backward times of the default (flash) and the general attention kernels. */
function attentionTiming(
  g: CudaBackend,
  B: number,
  T: number,
  NH: number,
  NKV: number,
  HS: number,
) {
  const q = g.alloc(B * T * NH * HS, "bf16"), k = g.alloc(B * T * NKV * HS, "bf16");
  const v = g.alloc(B * T * NKV * HS, "bf16"), o = g.alloc(B * T * NH * HS, "bf16");
  const lse = g.alloc(B * NH * T, "f32");
  g.fill(q, 0.01);
  g.fill(k, 0.02);
  g.fill(v, 0.03);
  const dq = g.alloc(B * T * NH * HS, "bf16"), dk = g.alloc(B * T * NKV * HS, "bf16");
  const dvb = g.alloc(B * T * NKV * HS, "bf16");
  const flops = 2 * 2 * B * NH * T * T * HS / 2; // causal half of QK^T and PV, forward
  const parts: string[] = [];
  for (const kind of ["flash", "simple"] as const) {
    const be = kind === "flash" ? g : createCudaBackend({ attention: kind });
    be.attentionForward(o, lse, q, k, v, B, T, T, T, NH, NKV, HS); // warm-up
    const fwd = be.timeMs(() => be.attentionForward(o, lse, q, k, v, B, T, T, T, NH, NKV, HS));
    const bwd = be.timeMs(() =>
      be.attentionBackward(dq, dk, dvb, o, q, k, v, o, lse, B, T, NH, NKV, HS)
    );
    if (be !== g) be.destroy();
    parts.push(
      `${kind}: forward ${fwd.toFixed(2)} ms (${(flops / fwd / 1e9).toFixed(0)} TFLOP/s), ` +
        `backward ${bwd.toFixed(2)} ms (${(2.5 * flops / bwd / 1e9).toFixed(0)} TFLOP/s)`,
    );
  }
  console.log(`info  attention B=${B} T=${T} NH=${NH} NKV=${NKV} HS=${HS}: ${parts.join("; ")}`);
  for (const buf of [q, k, v, o, lse, dq, dk, dvb]) g.free(buf);
}

// ---- main ------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const t0 = performance.now();
  try {
    gpu = selfTest ? new CpuStandIn() : createCudaBackend();
  } catch (e) {
    console.log(`FAIL  createCudaBackend: ${e instanceof Error ? (e.stack ?? e.message) : e}`);
    return 1;
  }
  const info = gpu.info;
  const dv = info.driverVersion;
  console.log(
    `GPU ${info.name}, ${(info.totalBytes / 2 ** 30).toFixed(1)} GiB, sm_${
      info.computeCapability.join("")
    }, ${info.multiprocessors} SMs, driver API ${Math.floor(dv / 1000)}.${(dv % 1000) / 10}`,
  );
  if (!selfTest) {
    console.log(
      `cuBLASLt ${cublasLt().cublasLtGetVersion()} from ${cublasLtPath()}; backend ready in ${
        (performance.now() - t0).toFixed(0)
      } ms (driver JIT of the PTX included)`,
    );
  }
  cpu = new CpuBackend();
  console.log(`CPU oracle: matmul via ${cpu.matmulPath}`);

  memoryChecks();
  elementwiseChecks();
  matmulChecks();
  layerChecks();
  doraChecks();
  attentionChecks();
  tiledAttentionChecks();
  flashAttentionChecks();
  await ncclChecks();
  torchChecks();
  timings();
  if (withModel) {
    try {
      fixtureModule = await import("../tests/fixture_io.ts");
      helperModule = await import("../tests/_model_helpers.ts");
      optimModule = await import("../src/optim/adamw.ts");
      schedModule = await import("../src/optim/lr_schedule.ts");
      clipModule = await import("../src/optim/clip.ts");
      await modelChecks();
    } catch (e) {
      results.push({ name: "model section", ok: false });
      console.log(`FAIL  model section could not start: ${(e as Error).stack ?? e}`);
    }
  }

  const failed = results.filter((r) => !r.ok);
  console.log(
    `\n${results.length - failed.length}/${results.length} checks passed in ${
      ((performance.now() - t0) / 1000).toFixed(1)
    } s; GPU memory in use ${gpu.bytesInUse()} B, reserved ${gpu.bytesReserved()} B`,
  );
  if (failed.length > 0) console.log(`failed: ${failed.map((f) => f.name).join(", ")}`);
  return failed.length > 0 ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main());
