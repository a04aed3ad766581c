/**
 * The CUDA backend: bf16 activations and weights, fp32 accumulation (cuBLASLt compute
 * 32F, fp32 arithmetic in every kernel), fp32 master weights and optimizer state where
 * the caller allocates them as f32 (a DeviceBuffer's dtype tells). One stream; a caching
 * allocator; kernels from the embedded PTX of kernels/*.cu (their CPU twins in
 * src/backend/cpu/ are the specification).
 *
 * Host-visible results (download, sum, sumSquares) wait for the stream. Everything else
 * is queued.
 */
import { TuneError } from "../../errors.ts";
import {
  check,
  cuda,
  type CudaLib,
  type DeviceInfo,
  deviceInfo,
  handleOf,
  initDevice,
} from "../../../ffi/cuda.ts";
import { CublasError, GemmRunner, type GemmShape, type GemmType } from "../../../ffi/cublaslt.ts";
import {
  type AdamWParams,
  type Backend,
  type Collectives,
  type DeviceBuffer,
  type DType,
  type RopeLayout,
  SingleProcessCollectives,
} from "../ops.ts";
import { dropoutKey } from "../cpu/dropout.ts";
import { CachingAllocator } from "./allocator.ts";
import { decodeBf16, encodeBf16 } from "./bf16.ts";
import { cudaBuf, CudaBuffer, dtCode, ELEM_BYTES } from "./buffer.ts";
import { type KernelName, KernelSet, THREADS } from "./kernels.ts";
import {
  type AttentionKernels,
  FLASH_THREADS,
  flashBackwardLaunch,
  flashEligible,
  flashForwardLaunch,
} from "./flash_attention.ts";
import {
  formatProfile,
  gemmName,
  GpuProfiler,
  type ProfileReport,
  type ProfileRow,
} from "./profile.ts";

/** cuBLASLt workspace size. */
const WORKSPACE_BYTES = 32 * 1024 * 1024;
/** Most blocks of the first reduction pass (their number depends on n only, so a sum of
 * the same buffer is deterministic). */
const REDUCE_BLOCKS = 256;
/** Most 256-thread blocks per SM of the vectorised grid-stride kernels (see runVec). */
const VEC_BLOCKS_PER_SM = 64;
/** Threads per block of cross_entropy (one block per row of logits). */
const CE_THREADS = 512;
/** Warps per block of the row-per-warp kernels. */
const WARPS = 4;
/** Largest head size the attention kernels hold in registers (32 lanes x MAXD 8). */
const MAX_HEAD_SIZE = 256;
const INT_MAX = 2147483647;

/** Options of createCudaBackend. */
export interface CudaBackendOptions {
  /** GPU ordinal; default TUNE_CUDA_DEVICE, else LOCAL_RANK, else 0. */
  device?: number;
  /** Collectives for multi-process runs (default: single process). */
  collectives?: Collectives;
  /**
   * Run fp32 matrix products on TF32 tensor cores (CUBLAS_COMPUTE_32F_FAST_TF32): several
   * times faster, products rounded to a 10-bit mantissa. Default: TUNE_CUDA_TF32=1, else off
   * (exact fp32, as the CPU oracle).
   */
  tf32?: boolean;
  /**
   * Attention kernels: "flash" (bf16 tensor-core kernels of kernels/flash_attention.cu
   * where they apply, see flash_attention.ts; the general kernels elsewhere), "simple" (one
   * warp per query row, K/V read from global memory) or "tiled" (forward with K/V tiles
   * shared by 4 query rows in shared memory; head size up to 128). Default:
   * TUNE_CUDA_ATTN, else "flash".
   */
  attention?: AttentionKernels;
}

function defaultOrdinal(): number {
  for (const v of ["TUNE_CUDA_DEVICE", "LOCAL_RANK"]) {
    const s = Deno.env.get(v);
    if (s !== undefined && /^\d+$/.test(s)) return Number(s);
  }
  return 0;
}

/**
 * Open the driver, cuBLASLt and the kernels and return the CUDA backend.
 * Without a driver it throws a one-line TuneError naming libcuda.so.1.
 */
export function createCudaBackend(opts: CudaBackendOptions = {}): CudaBackend {
  return new CudaBackend(opts);
}

function need(b: CudaBuffer, n: number, what: string): void {
  if (b.length < n) throw new Error(`${what}: buffer has ${b.length} elements, needs ${n}`);
  if (n > INT_MAX) throw new Error(`${what}: ${n} elements exceed the 2^31 kernel limit`);
}

/** Token ids must index the table: the same one-line error as the CPU backend. */
function checkTokens(tok: Int32Array, V: number): void {
  for (let i = 0; i < tok.length; i++) {
    if (tok[i] < 0 || tok[i] >= V) {
      throw new TuneError(
        `token id ${tok[i]} at position ${i} is outside the vocabulary 0..${V - 1}; ` +
          `check that the tokenizer matches the model`,
      );
    }
  }
}

/**
 * Threads per block of the block-per-row kernels (rmsnorm_*_vec), or 0 where they do not
 * apply (C % 8 != 0 or a buffer not 16-byte aligned): about two 8-column vectors of the
 * row per thread, 32 to 256 threads.
 */
function rowVecThreads(C: number, ...bufs: CudaBuffer[]): number {
  if (C % 8 !== 0 || bufs.some((b) => (b.ptr & 15n) !== 0n)) return 0;
  return Math.min(256, Math.max(32, Math.ceil(C / 16 / 32) * 32));
}

function float(b: CudaBuffer, what: string): void {
  if (b.dtype === "i32") throw new Error(`${what}: expected a float buffer, got i32`);
}

/** A Backend on one NVIDIA GPU. */
export class CudaBackend implements Backend {
  readonly name = "cuda" as const;
  readonly computeDtype: DType = "bf16";
  readonly collectives: Collectives;
  /** The GPU (name, memory, driver version, compute capability). */
  readonly info: DeviceInfo;
  readonly device: number;
  private readonly lib: CudaLib;
  private readonly stream: Deno.PointerValue;
  private readonly alloc_ = new CachingAllocator();
  private readonly kernels: KernelSet;
  private readonly gemm: GemmRunner;
  private readonly reduceScratch: CudaBuffer; // (REDUCE_BLOCKS + 1) f32
  private readonly workspace: CudaBuffer; // cuBLASLt workspace (bytes, not elements)
  private readonly reduceOut = new Float32Array(1);
  private liveBytes = 0;
  private readonly tf32: boolean;
  private readonly attentionKernels: AttentionKernels;
  private readonly profiler: GpuProfiler;
  /** Profiling since construction (TUNE_CUDA_PROFILE=1): the table goes to stderr at the end. */
  private envProfile = false;
  /** The report of the last stopProfile(). */
  lastProfile: ProfileReport | null = null;
  private profileReserved = 0;
  /** Vectors of ones by dtype (see onesOf). */
  private readonly ones = new Map<DType, CudaBuffer>();

  constructor(opts: CudaBackendOptions = {}) {
    this.tf32 = opts.tf32 ?? Deno.env.get("TUNE_CUDA_TF32") === "1";
    this.attentionKernels = opts.attention ??
      (Deno.env.get("TUNE_CUDA_ATTN") as AttentionKernels | undefined) ?? "flash";
    this.lib = cuda(); // throws the one-line TuneError when libcuda.so.1 is missing
    const { device } = initDevice(opts.device ?? defaultOrdinal());
    this.device = device;
    this.info = deviceInfo(device);
    const [major] = this.info.computeCapability;
    if (major < 8) {
      throw new TuneError(
        `GPU ${this.info.name} has compute capability ${
          this.info.computeCapability.join(".")
        }; device=cuda needs sm_80 or newer (A100, L4, H100); use device=cpu`,
      );
    }
    const slot = new BigUint64Array(1);
    // Flags 0: a blocking stream, ordered with the synchronous copies of the legacy stream.
    check("cuStreamCreate", this.lib.cuStreamCreate(slot, 0));
    this.stream = handleOf(slot);
    this.kernels = new KernelSet(this.stream);
    this.profiler = new GpuProfiler(this.stream);
    this.kernels.profiler = this.profiler;
    const ws = this.alloc_.alloc(WORKSPACE_BYTES);
    this.workspace = new CudaBuffer(ws.ptr, WORKSPACE_BYTES, "i32", ws.blockBytes, false);
    this.gemm = new GemmRunner(this.stream, ws.ptr, WORKSPACE_BYTES);
    const rs = this.alloc_.alloc((REDUCE_BLOCKS + 1) * 4);
    this.reduceScratch = new CudaBuffer(rs.ptr, REDUCE_BLOCKS + 1, "f32", rs.blockBytes, false);
    // Multi-GPU jobs pass src/backend/cuda/nccl_collectives.ts (NCCL on the legacy stream,
    // which this blocking stream is ordered with).
    this.collectives = opts.collectives ??
      new SingleProcessCollectives((dst, src) => this.copy(dst, src));
    if (Deno.env.get("TUNE_CUDA_PROFILE") === "1") {
      this.envProfile = true;
      this.startProfile();
      globalThis.addEventListener("unload", () => this.printEnvProfile());
    }
  }

  // ---- profiling ----------------------------------------------------------------------

  /**
   * Time every kernel, matmul, memset and device copy from now on (src/backend/cuda/profile.ts);
   * a profile already running restarts.
   */
  startProfile(): void {
    this.profileReserved = this.alloc_.reservedBytes;
    this.profiler.start();
  }

  /** Stop profiling (one sync): rows by total GPU time; the whole report is `lastProfile`. */
  stopProfile(): ProfileRow[] {
    const newDeviceBytes = this.alloc_.reservedBytes - this.profileReserved;
    this.lastProfile = { ...this.profiler.stop(), newDeviceBytes };
    return this.lastProfile.rows;
  }

  /** TUNE_CUDA_PROFILE=1: the profile since construction, to stderr, once. */
  private printEnvProfile(): void {
    if (!this.envProfile || !this.profiler.active) return;
    this.envProfile = false;
    this.stopProfile();
    console.error(`# TUNE_CUDA_PROFILE (${this.info.name})`);
    for (const l of formatProfile(this.lastProfile!, 40)) console.error(l);
  }

  /** Wait for the stream; while profiling, the host time blocked is noted under `why`. */
  private waitStream(why: string): void {
    if (!this.profiler.active) {
      check("cuStreamSynchronize", this.lib.cuStreamSynchronize(this.stream));
      return;
    }
    const t0 = performance.now();
    check("cuStreamSynchronize", this.lib.cuStreamSynchronize(this.stream));
    this.profiler.hostWait(why, performance.now() - t0);
  }

  // ---- memory -------------------------------------------------------------------------

  alloc(length: number, dtype: DType = "f32"): DeviceBuffer {
    if (!Number.isInteger(length) || length < 0) {
      throw new Error(`alloc: length ${length} is not a non-negative integer`);
    }
    const bytes = length * ELEM_BYTES[dtype];
    const { ptr, blockBytes } = this.alloc_.alloc(Math.max(bytes, 1));
    if (bytes > 0) {
      check("cuMemsetD8Async", this.lib.cuMemsetD8Async(ptr, 0, BigInt(bytes), this.stream));
    }
    this.liveBytes += bytes;
    return new CudaBuffer(ptr, length, dtype, blockBytes, true);
  }

  view(b: DeviceBuffer, offset: number, length: number): DeviceBuffer {
    const c = cudaBuf(b, "view");
    if (offset < 0 || length < 0 || offset + length > c.length) {
      throw new Error(`view [${offset}, ${offset + length}) is outside a buffer of ${c.length}`);
    }
    const ptr = c.ptr + BigInt(offset * ELEM_BYTES[c.dtype]);
    return new CudaBuffer(ptr, length, c.dtype, 0, false);
  }

  upload(dst: DeviceBuffer, src: Float32Array | Int32Array, dstOffset = 0): void {
    const d = cudaBuf(dst, "upload");
    if (dstOffset < 0 || dstOffset + src.length > d.length) {
      throw new Error(`upload of ${src.length} at ${dstOffset} overflows a buffer of ${d.length}`);
    }
    if ((d.dtype === "i32") !== (src instanceof Int32Array)) {
      throw new Error(`upload: ${src.constructor.name} into a ${d.dtype} buffer`);
    }
    if (src.length === 0) return;
    const eb = ELEM_BYTES[d.dtype];
    const at = d.ptr + BigInt(dstOffset * eb);
    let bytes: Uint8Array;
    if (d.dtype === "bf16") {
      const h = new Uint16Array(src.length);
      encodeBf16(h, src);
      bytes = new Uint8Array(h.buffer);
    } else {
      bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
    }
    // Synchronous (the legacy stream waits for this blocking stream's queued work first).
    const t0 = this.profiler.active ? performance.now() : 0;
    check("cuMemcpyHtoD_v2", this.lib.cuMemcpyHtoD_v2(at, bytes, BigInt(bytes.byteLength)));
    if (this.profiler.active) {
      this.profiler.hostWait("upload (synchronous HtoD)", performance.now() - t0);
    }
  }

  download(src: DeviceBuffer): Float32Array | Int32Array {
    const s = cudaBuf(src, "download");
    this.waitStream("download");
    if (s.dtype === "i32") {
      const out = new Int32Array(s.length);
      if (s.length > 0) this.dtoh(new Uint8Array(out.buffer), s);
      return out;
    }
    const out = new Float32Array(s.length);
    if (s.length === 0) return out;
    if (s.dtype === "bf16") {
      const h = new Uint16Array(s.length);
      this.dtoh(new Uint8Array(h.buffer), s);
      decodeBf16(out, h);
    } else {
      this.dtoh(new Uint8Array(out.buffer), s);
    }
    return out;
  }

  /**
   * The first n ints of an i32 buffer on the host: the caller's host copy when given (its
   * length checked), else a download (which waits for the stream).
   */
  private idsOnHost(b: CudaBuffer, n: number, why: string, host?: Int32Array): Int32Array {
    if (host !== undefined) {
      if (host.length !== n) throw new Error(`${why}: ${host.length} host ids for ${n} rows`);
      return host;
    }
    this.waitStream(`ids to host: ${why}`);
    const out = new Int32Array(n);
    if (n > 0) this.dtoh(new Uint8Array(out.buffer), b);
    return out;
  }

  private dtoh(dst: Uint8Array, s: CudaBuffer): void {
    check(
      "cuMemcpyDtoH_v2",
      this.lib.cuMemcpyDtoH_v2(dst, s.ptr, BigInt(dst.byteLength)),
    );
  }

  fill(b: DeviceBuffer, value: number): void {
    const c = cudaBuf(b, "fill");
    if (c.length === 0) return;
    if (c.dtype === "bf16") {
      need(c, c.length, "fill");
      this.runVec("fill", c.length, [c.ptr, 1, value, c.length]);
      return;
    }
    const bits = c.dtype === "i32"
      ? value | 0
      : new Uint32Array(new Float32Array([value]).buffer)[0];
    const t = this.profiler.active ? this.profiler.before() : -1;
    check(
      "cuMemsetD32Async",
      this.lib.cuMemsetD32Async(c.ptr, bits >>> 0, BigInt(c.length), this.stream),
    );
    if (t >= 0) this.profiler.after(t, "memset (fill)", "memset");
  }

  copy(dst: DeviceBuffer, src: DeviceBuffer): void {
    const d = cudaBuf(dst, "copy"), s = cudaBuf(src, "copy");
    if (d.length !== s.length) throw new Error(`copy: lengths ${d.length} != ${s.length}`);
    if ((d.dtype === "i32") !== (s.dtype === "i32")) {
      throw new Error(`copy: ${s.dtype} into ${d.dtype}`);
    }
    if (d.length === 0) return;
    if (d.dtype === s.dtype) {
      const t = this.profiler.active ? this.profiler.before() : -1;
      check(
        "cuMemcpyDtoDAsync_v2",
        this.lib.cuMemcpyDtoDAsync_v2(d.ptr, s.ptr, BigInt(d.bytes), this.stream),
      );
      if (t >= 0) this.profiler.after(t, "memcpy DtoD (copy)", "memcpy");
    } else {
      need(d, d.length, "copy");
      this.runVec("cast_copy", d.length, [
        d.ptr,
        dtCode(d.dtype),
        s.ptr,
        dtCode(s.dtype),
        d.length,
      ]);
    }
  }

  free(b: DeviceBuffer): void {
    const c = cudaBuf(b, "free");
    if (!c.owned) return;
    c.owned = false; // a second free is a no-op
    this.liveBytes -= c.bytes;
    this.alloc_.release(c.ptr, c.blockBytes);
  }

  sync(): void {
    this.waitStream("sync()");
  }

  bytesInUse(): number {
    return this.liveBytes;
  }

  /**
   * Release the cuBLASLt handle, the stream and every cached block. Buffers still alive
   * stay allocated until the process ends; the backend must not be used afterwards.
   */
  destroy(): void {
    this.sync();
    this.printEnvProfile();
    this.profiler.destroy();
    this.gemm.destroy();
    this.dropScratch(this.workspace);
    this.dropScratch(this.reduceScratch);
    for (const b of this.ones.values()) this.dropScratch(b);
    this.ones.clear();
    this.alloc_.releaseCached();
    check("cuStreamDestroy_v2", this.lib.cuStreamDestroy_v2(this.stream));
  }

  /** Bytes reserved from the driver (live plus cached blocks). */
  bytesReserved(): number {
    return this.alloc_.reservedBytes;
  }

  /** Milliseconds of GPU time `fn`'s queued work takes (events around it; synchronizes). */
  timeMs(fn: () => void): number {
    const lib = this.lib;
    const slot = new BigUint64Array(1);
    check("cuEventCreate", lib.cuEventCreate(slot, 0));
    const start = handleOf(slot);
    check("cuEventCreate", lib.cuEventCreate(slot, 0));
    const end = handleOf(slot);
    try {
      check("cuEventRecord", lib.cuEventRecord(start, this.stream));
      fn();
      check("cuEventRecord", lib.cuEventRecord(end, this.stream));
      check("cuEventSynchronize", lib.cuEventSynchronize(end));
      const ms = new Float32Array(1);
      const elapsed = lib.cuEventElapsedTime_v2 ?? lib.cuEventElapsedTime;
      if (elapsed === null) throw new Error("the driver exports no cuEventElapsedTime");
      check("cuEventElapsedTime", elapsed(ms, start, end));
      return ms[0];
    } finally {
      lib.cuEventDestroy_v2(start);
      lib.cuEventDestroy_v2(end);
    }
  }

  /** Internal scratch of n elements (stream-ordered reuse makes free-after-queue safe). */
  private scratch(n: number, dtype: DType): CudaBuffer {
    const { ptr, blockBytes } = this.alloc_.alloc(Math.max(n * ELEM_BYTES[dtype], 1));
    return new CudaBuffer(ptr, n, dtype, blockBytes, false);
  }

  private dropScratch(b: CudaBuffer): void {
    this.alloc_.release(b.ptr, b.blockBytes);
  }

  // ---- elementwise --------------------------------------------------------------------

  /**
   * Launch a grid-stride kernel over n elements whose fast path (16-byte aligned buffers)
   * takes 8 elements per thread per step: enough 256-thread blocks for n / 8 threads, at
   * most VEC_BLOCKS_PER_SM per SM (the loop covers the rest; the unaligned path, one
   * element per step, is covered the same way).
   */
  private runVec(
    name: KernelName,
    n: number,
    args: readonly (number | bigint)[],
    label?: string,
  ): void {
    if (n <= 0) return;
    const cap = VEC_BLOCKS_PER_SM * Math.max(this.info.multiprocessors, 1);
    const blocks = Math.max(1, Math.min(Math.ceil(n / (8 * THREADS)), cap));
    this.kernels.run(name, blocks, THREADS, 0, args, label);
  }

  add(out: DeviceBuffer, a: DeviceBuffer, b: DeviceBuffer): void {
    this.binary("ew_add", out, a, b);
  }

  mul(out: DeviceBuffer, a: DeviceBuffer, b: DeviceBuffer): void {
    this.binary("ew_mul", out, a, b);
  }

  private binary(k: "ew_add" | "ew_mul", out: DeviceBuffer, a: DeviceBuffer, b: DeviceBuffer) {
    const o = cudaBuf(out, k), x = cudaBuf(a, k), y = cudaBuf(b, k);
    const n = o.length;
    for (const [buf, w] of [[o, "out"], [x, "a"], [y, "b"]] as const) {
      float(buf, `${k} ${w}`);
      need(buf, n, `${k} ${w}`);
    }
    this.runVec(k, n, [
      o.ptr,
      dtCode(o.dtype),
      x.ptr,
      dtCode(x.dtype),
      y.ptr,
      dtCode(y.dtype),
      n,
    ]);
  }

  axpy(out: DeviceBuffer, x: DeviceBuffer, alpha: number): void {
    const o = cudaBuf(out, "axpy"), a = cudaBuf(x, "axpy x");
    const n = o.length;
    float(o, "axpy");
    float(a, "axpy x");
    need(a, n, "axpy x");
    need(o, n, "axpy");
    this.runVec("ew_axpy", n, [o.ptr, dtCode(o.dtype), a.ptr, dtCode(a.dtype), alpha, n]);
  }

  scale(buf: DeviceBuffer, s: number): void {
    const o = cudaBuf(buf, "scale");
    float(o, "scale");
    need(o, o.length, "scale");
    this.runVec("ew_scale", o.length, [o.ptr, dtCode(o.dtype), s, o.length]);
  }

  sum(buf: DeviceBuffer): number {
    return this.reduce(buf, 0);
  }

  sumSquares(buf: DeviceBuffer): number {
    return this.reduce(buf, 1);
  }

  private reduce(buf: DeviceBuffer, squares: number): number {
    const b = cudaBuf(buf, "sum");
    float(b, "sum");
    need(b, b.length, "sum");
    if (b.length === 0) return 0;
    const partial = this.reduceScratch.ptr;
    const result = partial + BigInt(REDUCE_BLOCKS * 4);
    // At least 8 elements per thread before a block is added.
    const blocks = Math.min(REDUCE_BLOCKS, Math.ceil(b.length / (THREADS * 8)));
    this.kernels.run("reduce_partial", blocks, THREADS, 0, [
      partial,
      b.ptr,
      dtCode(b.dtype),
      b.length,
      squares,
    ]);
    this.kernels.run("reduce_final", 1, THREADS, 0, [result, partial, blocks]);
    this.waitStream(squares ? "sumSquares" : "sum");
    check(
      "cuMemcpyDtoH_v2",
      this.lib.cuMemcpyDtoH_v2(new Uint8Array(this.reduceOut.buffer), result, 4n),
    );
    return this.reduceOut[0];
  }

  dropoutMask(mask: DeviceBuffer, p: number, seed: number): void {
    if (!(p >= 0 && p < 1)) throw new TuneError(`dropout probability ${p} must be in [0, 1)`);
    if (!Number.isInteger(seed)) throw new TuneError(`dropout seed ${seed} must be an integer`);
    const m = cudaBuf(mask, "dropoutMask");
    float(m, "dropoutMask");
    need(m, m.length, "dropoutMask");
    // Same key, threshold and scale as src/backend/cpu/dropout.ts.
    const key = dropoutKey(seed);
    const thresh = Math.floor(p * 4294967296);
    const keep = Math.fround(1 / (1 - p));
    this.kernels.run1d("dropout_mask", m.length, [
      m.ptr,
      dtCode(m.dtype),
      key | 0,
      thresh | 0,
      keep,
      m.length,
    ]);
  }

  // ---- layers -------------------------------------------------------------------------

  /**
   * One GEMM on row-major buffers expressed column-major (see matmulForward). Operands of
   * mixed dtypes are cast to bf16 scratch first: cuBLASLt takes A and B of one type.
   */
  private gemmRun(
    shape: Omit<GemmShape, "abType" | "cType">,
    A: CudaBuffer,
    B: CudaBuffer,
    D: CudaBuffer,
    beta: number,
    opts: { exact?: boolean; role?: string } = {},
  ): void {
    const allF32 = A.dtype === "f32" && B.dtype === "f32" && D.dtype === "f32";
    const abType: GemmType = allF32 ? "f32" : "bf16";
    const temps: CudaBuffer[] = [];
    const asAb = (x: CudaBuffer): CudaBuffer => {
      if (x.dtype === abType) return x;
      const t = this.scratch(x.length, abType);
      this.kernels.run1d(
        "cast_copy",
        x.length,
        [t.ptr, dtCode(abType), x.ptr, dtCode(x.dtype), x.length],
        `cast_copy (gemm operand ${x.dtype}->${abType})`,
      );
      temps.push(t);
      return t;
    };
    const a = asAb(A), b = asAb(B);
    const cType: GemmType = D.dtype === "bf16" ? "bf16" : "f32";
    // exact: fp32 products even under TF32 (reductions that are not layer matmuls)
    const full = { ...shape, abType, cType, tf32: this.tf32 && opts.exact !== true };
    try {
      this.gemmTimed(full, a.ptr, b.ptr, D.ptr, beta, opts.role);
    } catch (e) {
      // No algorithm for these (view) addresses: run on 256-byte aligned copies instead.
      const misaligned = (x: CudaBuffer) => x.ptr % 16n !== 0n;
      const noAlgo = e instanceof CublasError &&
        e.call.startsWith("cublasLtMatmulAlgoGetHeuristic");
      if (!noAlgo || ![a, b, D].some(misaligned)) throw e;
      const aligned = (x: CudaBuffer, fill: boolean): CudaBuffer => {
        if (!misaligned(x)) return x;
        const t = this.scratch(x.length, x.dtype);
        if (fill) this.copy(t, x);
        temps.push(t);
        return t;
      };
      const a2 = aligned(a, true), b2 = aligned(b, true), d2 = aligned(D, beta !== 0);
      this.gemmTimed(full, a2.ptr, b2.ptr, d2.ptr, beta, opts.role);
      if (d2 !== D) this.copy(D, d2);
    }
    for (const t of temps) this.dropScratch(t);
  }

  /** One cuBLASLt matmul, timed under its shape while profiling. */
  private gemmTimed(
    full: GemmShape,
    A: bigint,
    B: bigint,
    D: bigint,
    beta: number,
    role?: string,
  ): void {
    const p = this.profiler;
    if (!p.active) return this.gemm.run(full, A, B, D, 1, beta);
    const t = p.before();
    this.gemm.run(full, A, B, D, 1, beta);
    const flops = 2 * full.m * full.n * full.k * (full.batch ?? 1);
    p.after(t, gemmName(full, full.abType, full.cType, role), "gemm", flops);
  }

  matmulForward(
    out: DeviceBuffer,
    inp: DeviceBuffer,
    weight: DeviceBuffer,
    bias: DeviceBuffer | null,
    M: number,
    K: number,
    N: number,
    accumulate = false,
  ): void {
    const o = cudaBuf(out, "matmul out"), x = cudaBuf(inp, "matmul inp");
    const w = cudaBuf(weight, "matmul weight");
    need(o, M * N, "matmul out"); // (M, N)
    need(x, M * K, "matmul inp"); // (M, K)
    need(w, N * K, "matmul weight"); // (N, K)
    for (const b of [o, x, w]) float(b, "matmul");
    if (M === 0 || N === 0) return;
    if (K === 0) {
      if (!accumulate) this.fill(this.view(o, 0, M * N), 0);
    } else {
      // Column-major: out^T(N, M) = W(K, N)^T . inp^T(K, M).
      this.gemmRun(
        { transA: true, transB: false, m: N, n: M, k: K, lda: K, ldb: K, ldc: N },
        w,
        x,
        o,
        accumulate ? 1 : 0,
      );
    }
    if (bias !== null) {
      const bb = cudaBuf(bias, "matmul bias");
      need(bb, N, "matmul bias"); // (N)
      this.kernels.run1d("add_bias", M * N, [
        o.ptr,
        dtCode(o.dtype),
        bb.ptr,
        dtCode(bb.dtype),
        M,
        N,
      ]);
    }
  }

  /**
   * out(batch, M, N) = inp(batch, M, K) @ weight(batch, N, K)^T as one strided-batched
   * cuBLASLt call (BATCH_COUNT / STRIDED_BATCH_OFFSET layouts). Not part of ops.ts.
   */
  matmulBatched(
    out: DeviceBuffer,
    inp: DeviceBuffer,
    weight: DeviceBuffer,
    batch: number,
    M: number,
    K: number,
    N: number,
  ): void {
    const o = cudaBuf(out, "matmulBatched out"), x = cudaBuf(inp, "matmulBatched inp");
    const w = cudaBuf(weight, "matmulBatched weight");
    need(o, batch * M * N, "matmulBatched out"); // (batch, M, N)
    need(x, batch * M * K, "matmulBatched inp"); // (batch, M, K)
    need(w, batch * N * K, "matmulBatched weight"); // (batch, N, K)
    if (batch === 0 || M === 0 || N === 0 || K === 0) return;
    this.gemmRun(
      {
        transA: true,
        transB: false,
        m: N,
        n: M,
        k: K,
        lda: K,
        ldb: K,
        ldc: N,
        batch,
        strideA: N * K,
        strideB: M * K,
        strideC: M * N,
      },
      w,
      x,
      o,
      0,
    );
  }

  matmulBackward(
    dinp: DeviceBuffer | null,
    dweight: DeviceBuffer | null,
    dbias: DeviceBuffer | null,
    dout: DeviceBuffer,
    inp: DeviceBuffer,
    weight: DeviceBuffer,
    M: number,
    K: number,
    N: number,
  ): void {
    const dy = cudaBuf(dout, "matmul dout");
    need(dy, M * N, "matmul dout"); // (M, N)
    if (dinp !== null && M > 0 && K > 0 && N > 0) {
      const dx = cudaBuf(dinp, "matmul dinp"), w = cudaBuf(weight, "matmul weight");
      need(dx, M * K, "matmul dinp"); // (M, K)
      need(w, N * K, "matmul weight"); // (N, K)
      // Column-major: dinp^T(K, M) += W^T(K, N) . dout^T(N, M).
      this.gemmRun(
        { transA: false, transB: false, m: K, n: M, k: N, lda: K, ldb: N, ldc: K },
        w,
        dy,
        dx,
        1,
      );
    }
    if (dweight !== null && M > 0 && K > 0 && N > 0) {
      const dw = cudaBuf(dweight, "matmul dweight"), x = cudaBuf(inp, "matmul inp");
      need(dw, N * K, "matmul dweight"); // (N, K)
      need(x, M * K, "matmul inp"); // (M, K)
      // Column-major: dweight^T(K, N) += inp^T(K, M) . dout(M, N).
      this.gemmRun(
        { transA: false, transB: true, m: K, n: N, k: M, lda: K, ldb: N, ldc: K },
        x,
        dy,
        dw,
        1,
      );
    }
    if (dbias !== null && N > 0) {
      const db = cudaBuf(dbias, "matmul dbias");
      need(db, N, "matmul dbias"); // (N)
      if (db.dtype === "f32" && M > 0) {
        // Column-major: dbias(N, 1) += dout(N, M) . ones(M, 1), a GEMV that fills the GPU
        // (bias_grad runs one thread per column, each looping over all M rows).
        const ones = this.onesOf(M, dy.dtype === "bf16" ? "bf16" : "f32"); // (M)
        this.gemmRun(
          { transA: false, transB: false, m: N, n: 1, k: M, lda: N, ldb: M, ldc: N },
          dy,
          ones,
          db,
          1,
          { exact: true, role: "bias grad" },
        );
      } else {
        this.kernels.run("bias_grad", Math.ceil(N / THREADS), THREADS, 0, [
          db.ptr,
          dtCode(db.dtype),
          dy.ptr,
          dtCode(dy.dtype),
          M,
          N,
        ]);
      }
    }
  }

  /** A cached vector of at least n ones of `dtype` (column sums as GEMVs). */
  private onesOf(n: number, dtype: DType): CudaBuffer {
    let b = this.ones.get(dtype);
    if (b === undefined || b.length < n) {
      if (b !== undefined) this.dropScratch(b);
      b = this.scratch(n, dtype); // (n)
      this.fill(b, 1);
      this.ones.set(dtype, b);
    }
    return b;
  }

  embeddingForward(
    out: DeviceBuffer,
    tokens: DeviceBuffer,
    table: DeviceBuffer,
    N: number,
    C: number,
    hostTokens?: Int32Array,
  ): void {
    const o = cudaBuf(out, "embedding out"), t = cudaBuf(tokens, "embedding tokens");
    const tb = cudaBuf(table, "embedding table");
    need(o, N * C, "embedding out"); // (N, C)
    need(t, N, "embedding tokens"); // (N)
    if (t.dtype !== "i32") throw new Error("embedding tokens: expected an i32 buffer");
    const V = Math.floor(tb.length / C); // table (V, C)
    checkTokens(this.idsOnHost(t, N, "embeddingForward token check", hostTokens), V);
    this.kernels.run1d("embedding_fwd", N * C, [
      o.ptr,
      dtCode(o.dtype),
      t.ptr,
      tb.ptr,
      dtCode(tb.dtype),
      N,
      C,
      V,
    ]);
  }

  embeddingBackward(
    dtable: DeviceBuffer,
    dout: DeviceBuffer,
    tokens: DeviceBuffer,
    N: number,
    C: number,
    hostTokens?: Int32Array,
  ): void {
    const dt = cudaBuf(dtable, "embedding dtable"), dy = cudaBuf(dout, "embedding dout");
    const t = cudaBuf(tokens, "embedding tokens");
    need(dy, N * C, "embedding dout"); // (N, C)
    need(t, N, "embedding tokens"); // (N)
    if (t.dtype !== "i32") throw new Error("embedding tokens: expected an i32 buffer");
    const V = Math.floor(dt.length / C); // dtable (V, C)
    if (N === 0 || C === 0) return;
    // Group the rows by token on the host (a small download) so the kernel can add each
    // token's rows in a fixed order: deterministic, and out-of-range ids are reported.
    const tok = this.idsOnHost(t, N, "embeddingBackward row order", hostTokens);
    checkTokens(tok, V);
    const order = Array.from({ length: N }, (_, i) => i);
    order.sort((a, b) => tok[a] - tok[b] || a - b);
    const uniq: number[] = [], starts: number[] = [];
    for (let j = 0; j < N; j++) {
      if (j === 0 || tok[order[j]] !== tok[order[j - 1]]) {
        uniq.push(tok[order[j]]);
        starts.push(j);
      }
    }
    starts.push(N);
    const U = uniq.length;
    const meta = new Int32Array(2 * U + 1 + N); // [uniq(U), starts(U + 1), rows(N)]
    meta.set(uniq, 0);
    meta.set(starts, U);
    meta.set(order, 2 * U + 1);
    const m = this.scratch(meta.length, "i32");
    this.upload(m, meta);
    this.kernels.run("embedding_bwd", [U, Math.ceil(C / THREADS), 1], THREADS, 0, [
      dt.ptr,
      dtCode(dt.dtype),
      dy.ptr,
      dtCode(dy.dtype),
      m.ptr,
      U,
      C,
    ]);
    this.dropScratch(m);
  }

  rmsnormForward(
    out: DeviceBuffer,
    rstd: DeviceBuffer,
    inp: DeviceBuffer,
    weight: DeviceBuffer,
    N: number,
    C: number,
    eps: number,
  ): void {
    const o = cudaBuf(out, "rmsnorm out"), r = cudaBuf(rstd, "rmsnorm rstd");
    const x = cudaBuf(inp, "rmsnorm inp"), w = cudaBuf(weight, "rmsnorm weight");
    need(o, N * C, "rmsnorm out"); // (N, C)
    need(r, N, "rmsnorm rstd"); // (N)
    need(x, N * C, "rmsnorm inp"); // (N, C)
    need(w, C, "rmsnorm weight"); // (C)
    if (N === 0) return;
    const rows = 8; // warps per block
    const vec = rowVecThreads(C, o, x, w);
    this.kernels.run(
      vec ? "rmsnorm_fwd_vec" : "rmsnorm_fwd",
      vec ? N : Math.ceil(N / rows),
      vec ? vec : 32 * rows,
      0,
      [
        o.ptr,
        dtCode(o.dtype),
        r.ptr,
        dtCode(r.dtype),
        x.ptr,
        dtCode(x.dtype),
        w.ptr,
        dtCode(w.dtype),
        N,
        C,
        eps,
      ],
      "rmsnorm_fwd", // one profile row whichever kernel ran
    );
  }

  rmsnormBackward(
    dinp: DeviceBuffer,
    dweight: DeviceBuffer | null,
    dout: DeviceBuffer,
    inp: DeviceBuffer,
    weight: DeviceBuffer,
    rstd: DeviceBuffer,
    N: number,
    C: number,
  ): void {
    const dx = cudaBuf(dinp, "rmsnorm dinp"), dy = cudaBuf(dout, "rmsnorm dout");
    const x = cudaBuf(inp, "rmsnorm inp"), w = cudaBuf(weight, "rmsnorm weight");
    const r = cudaBuf(rstd, "rmsnorm rstd");
    need(dx, N * C, "rmsnorm dinp"); // (N, C)
    need(dy, N * C, "rmsnorm dout"); // (N, C)
    need(x, N * C, "rmsnorm inp"); // (N, C)
    need(w, C, "rmsnorm weight"); // (C)
    need(r, N, "rmsnorm rstd"); // (N)
    if (N === 0) return;
    const rows = 8;
    const vec = rowVecThreads(C, dx, dy, x, w);
    this.kernels.run(
      vec ? "rmsnorm_bwd_dx_vec" : "rmsnorm_bwd_dx",
      vec ? N : Math.ceil(N / rows),
      vec ? vec : 32 * rows,
      0,
      [
        dx.ptr,
        dtCode(dx.dtype),
        dy.ptr,
        dtCode(dy.dtype),
        x.ptr,
        dtCode(x.dtype),
        w.ptr,
        dtCode(w.dtype),
        r.ptr,
        dtCode(r.dtype),
        N,
        C,
      ],
      "rmsnorm_bwd_dx",
    );
    if (dweight !== null) {
      const dw = cudaBuf(dweight, "rmsnorm dweight");
      need(dw, C, "rmsnorm dweight"); // (C)
      if (dw.dtype === "f32" && r.dtype === "f32") {
        this.rmsnormWeightGrad(dw, dy, x, r, N, C);
        return;
      }
      this.kernels.run("rmsnorm_bwd_dw", Math.ceil(C / THREADS), THREADS, 0, [
        dw.ptr,
        dtCode(dw.dtype),
        dy.ptr,
        dtCode(dy.dtype),
        x.ptr,
        dtCode(x.dtype),
        r.ptr,
        dtCode(r.dtype),
        N,
        C,
      ]);
    }
  }

  /**
   * dweight(C) += sum over rows of dout * inp * rstd in two passes that fill the GPU.
   * With C % 8 == 0 and 16-byte aligned dout/inp: rmsnorm_dw_partial reads each row once
   * into column sums of row chunks (R, C), and bias_grad adds those R rows in order.
   * Otherwise: p(N, C) = dout * inp (fp32 scratch; a product of two bf16 values is exact in fp32),
   * then dweight += p^T . rstd as an exact-fp32 cuBLASLt GEMV. (rmsnorm_bwd_dw runs one
   * thread per column: C / 256 blocks, 8 of an H200's 132 SMs at C = 2048, each thread
   * looping over all N rows.) The sum order differs from the CPU twin's by fp32 rounding.
   */
  private rmsnormWeightGrad(
    dw: CudaBuffer,
    dy: CudaBuffer,
    x: CudaBuffer,
    r: CudaBuffer,
    N: number,
    C: number,
  ): void {
    if (C > 0 && C % 8 === 0 && (dy.ptr & 15n) === 0n && (x.ptr & 15n) === 0n) {
      // One read of dout and inp: column sums of row chunks (chunk a function of N only,
      // so the result is deterministic), then bias_grad adds the R partial rows in order.
      const chunk = Math.max(8, Math.ceil(N / 64));
      const R = Math.ceil(N / chunk);
      const part = this.scratch(R * C, "f32"); // (R, C)
      this.kernels.run("rmsnorm_dw_partial", [Math.ceil(C / 256), R, 1], 256, 0, [
        part.ptr,
        dy.ptr,
        dtCode(dy.dtype),
        x.ptr,
        dtCode(x.dtype),
        r.ptr,
        dtCode(r.dtype),
        N,
        C,
        chunk,
      ], "rmsnorm dweight partial");
      this.kernels.run("bias_grad", Math.ceil(C / THREADS), THREADS, 0, [
        dw.ptr,
        dtCode(dw.dtype),
        part.ptr,
        dtCode("f32"),
        R,
        C,
      ], "bias_grad (rmsnorm dweight)");
      this.dropScratch(part);
      return;
    }
    const p = this.scratch(N * C, "f32"); // (N, C)
    this.runVec(
      "ew_mul",
      N * C,
      [p.ptr, dtCode("f32"), dy.ptr, dtCode(dy.dtype), x.ptr, dtCode(x.dtype), N * C],
      "ew_mul (rmsnorm dweight)",
    );
    // Column-major: dweight(C, 1) += p(C, N) . rstd(N, 1).
    this.gemmRun(
      { transA: false, transB: false, m: C, n: 1, k: N, lda: C, ldb: N, ldc: C },
      p,
      r,
      dw,
      1,
      { exact: true, role: "rmsnorm dweight" },
    );
    this.dropScratch(p);
  }

  rope(
    x: DeviceBuffer,
    cos: DeviceBuffer,
    sin: DeviceBuffer,
    B: number,
    T: number,
    NH: number,
    HS: number,
    pos: number,
    layout: RopeLayout,
    inverse: boolean,
    positions: DeviceBuffer | null = null,
  ): void {
    const xb = cudaBuf(x, "rope x"), c = cudaBuf(cos, "rope cos"), s = cudaBuf(sin, "rope sin");
    if (HS % 2 !== 0) throw new Error(`rope: head size ${HS} is odd`);
    need(xb, B * T * NH * HS, "rope x"); // (B, T, NH, HS)
    // With positions the table length is the caller's to guarantee (the model checks its
    // packed positions against max_seq_len before upload; reading them back would sync).
    const rows = positions === null ? pos + T : 1;
    need(c, rows * (HS / 2), "rope cos"); // (Tmax, HS/2)
    need(s, rows * (HS / 2), "rope sin");
    const pb = positions === null ? null : this.segmentIds(positions, B * T, "rope positions"); // (B, T)
    if (c.dtype !== s.dtype) throw new Error("rope: cos and sin differ in dtype");
    this.runVec("rope", B * T * NH * HS, [
      xb.ptr,
      dtCode(xb.dtype),
      c.ptr,
      s.ptr,
      dtCode(c.dtype),
      B,
      T,
      NH,
      HS,
      pos,
      layout === "half" ? 1 : 0,
      inverse ? 1 : 0,
      pb === null ? 0n : pb.ptr,
    ]);
  }

  /** The device pointer of an i32 (B, T) buffer of segment ids or positions. */
  private segmentIds(b: DeviceBuffer, n: number, what: string) {
    const c = cudaBuf(b, what);
    if (c.dtype !== "i32") throw new Error(`${what}: expected an i32 buffer, got ${c.dtype}`);
    need(c, n, what);
    return c;
  }

  attentionForward(
    out: DeviceBuffer,
    lse: DeviceBuffer,
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    B: number,
    T: number,
    Tk: number,
    Tcap: number,
    NH: number,
    NKV: number,
    HS: number,
    segments: DeviceBuffer | null = null,
  ): void {
    const o = cudaBuf(out, "attention out"), l = cudaBuf(lse, "attention lse");
    const qb = cudaBuf(q, "attention q"), kb = cudaBuf(k, "attention k");
    const vb = cudaBuf(v, "attention v");
    this.checkAttention(NH, NKV, HS, T, Tk, Tcap);
    need(o, B * T * NH * HS, "attention out"); // (B, T, NH, HS)
    need(l, B * NH * T, "attention lse"); // (B, NH, T)
    need(qb, B * T * NH * HS, "attention q"); // (B, T, NH, HS)
    need(kb, B * Tcap * NKV * HS, "attention k"); // (B, Tcap, NKV, HS)
    need(vb, B * Tcap * NKV * HS, "attention v"); // (B, Tcap, NKV, HS)
    if (segments !== null && Tk !== T) {
      throw new Error(`attention: segments need Tk = T (got T ${T}, Tk ${Tk}): no KV cache`);
    }
    const sg = segments === null ? 0n : this.segmentIds(segments, B * T, "attention segments").ptr; // (B, T)
    const rows = B * NH * T;
    if (rows === 0) return;
    if (this.attentionKernels === "flash" && flashEligible(HS, l, [o, qb, kb, vb])) {
      const { name, grid, smem } = flashForwardLaunch(B, T, NH, HS);
      this.kernels.run(name, grid, FLASH_THREADS, smem, [
        o.ptr,
        l.ptr,
        qb.ptr,
        kb.ptr,
        vb.ptr,
        B,
        T,
        Tk,
        Tcap,
        NH,
        NKV,
        1 / Math.sqrt(HS),
        sg,
      ]);
      return;
    }
    const args = [
      o.ptr,
      dtCode(o.dtype),
      l.ptr,
      dtCode(l.dtype),
      qb.ptr,
      dtCode(qb.dtype),
      kb.ptr,
      dtCode(kb.dtype),
      vb.ptr,
      dtCode(vb.dtype),
      B,
      T,
      Tk,
      Tcap,
      NH,
      NKV,
      HS,
      1 / Math.sqrt(HS),
      sg,
    ];
    if (this.attentionKernels === "tiled" && HS <= 128 && B * NH <= 65535) {
      const smem = (WARPS * HS + 32 * (HS + 1) + 32 * HS) * 4;
      const grid: [number, number, number] = [Math.ceil(T / WARPS), B * NH, 1];
      this.kernels.run("attn_fwd_tiled", grid, 32 * WARPS, smem, args);
    } else {
      this.kernels.run("attn_fwd", Math.ceil(rows / WARPS), 32 * WARPS, WARPS * HS * 4, args);
    }
  }

  private checkAttention(NH: number, NKV: number, HS: number, T: number, Tk: number, Tcap: number) {
    if (NKV <= 0 || NH % NKV !== 0) {
      throw new Error(`attention: NH ${NH} is not a multiple of NKV ${NKV}`);
    }
    if (HS > MAX_HEAD_SIZE) {
      throw new Error(`attention: head size ${HS} > ${MAX_HEAD_SIZE} is not supported on CUDA`);
    }
    if (T > Tk || Tk > Tcap) throw new Error(`attention: needs T ${T} <= Tk ${Tk} <= Tcap ${Tcap}`);
  }

  attentionBackward(
    dq: DeviceBuffer,
    dk: DeviceBuffer,
    dv: DeviceBuffer,
    dout: DeviceBuffer,
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    out: DeviceBuffer,
    lse: DeviceBuffer,
    B: number,
    T: number,
    NH: number,
    NKV: number,
    HS: number,
    segments: DeviceBuffer | null = null,
  ): void {
    const b = (x: DeviceBuffer, w: string) => cudaBuf(x, `attention ${w}`);
    const dqb = b(dq, "dq"), dkb = b(dk, "dk"), dvb = b(dv, "dv"), dy = b(dout, "dout");
    const qb = b(q, "q"), kb = b(k, "k"), vb = b(v, "v"), ob = b(out, "out"), l = b(lse, "lse");
    this.checkAttention(NH, NKV, HS, T, T, T);
    for (const [x, w] of [[dqb, "dq"], [dy, "dout"], [qb, "q"], [ob, "out"]] as const) {
      need(x, B * T * NH * HS, `attention ${w}`); // (B, T, NH, HS)
    }
    for (const [x, w] of [[dkb, "dk"], [dvb, "dv"], [kb, "k"], [vb, "v"]] as const) {
      need(x, B * T * NKV * HS, `attention ${w}`); // (B, T, NKV, HS)
    }
    need(l, B * NH * T, "attention lse"); // (B, NH, T)
    const sg = segments === null ? 0n : this.segmentIds(segments, B * T, "attention segments").ptr; // (B, T)
    const rows = B * NH * T;
    if (rows === 0) return;
    const dsum = this.scratch(rows, "f32"); // (B, NH, T)
    const scale = 1 / Math.sqrt(HS);
    const grid = Math.ceil(rows / WARPS);
    this.kernels.run("attn_bwd_dsum", grid, 32 * WARPS, 0, [
      dsum.ptr,
      dy.ptr,
      dtCode(dy.dtype),
      ob.ptr,
      dtCode(ob.dtype),
      B,
      T,
      NH,
      HS,
    ]);
    if (this.attentionKernels === "flash" && flashEligible(HS, l, [dy, qb, kb, vb])) {
      // dq accumulates in fp32 over the key blocks (atomics), then takes dq's dtype.
      const dqAcc = dqb.dtype === "f32" ? dqb : this.scratch(B * T * NH * HS, "f32"); // (B, T, NH, HS)
      this.fill(dqAcc, 0);
      const { name, grid: g, smem } = flashBackwardLaunch(B, T, NKV, HS);
      this.kernels.run(name, g, FLASH_THREADS, smem, [
        dqAcc.ptr,
        dkb.ptr,
        dtCode(dkb.dtype),
        dvb.ptr,
        dtCode(dvb.dtype),
        dy.ptr,
        qb.ptr,
        kb.ptr,
        vb.ptr,
        l.ptr,
        dsum.ptr,
        B,
        T,
        NH,
        NKV,
        scale,
        sg,
      ]);
      if (dqAcc !== dqb) {
        this.copy(dqb, dqAcc);
        this.dropScratch(dqAcc);
      }
      this.dropScratch(dsum);
      return;
    }
    this.kernels.run("attn_bwd_dq", grid, 32 * WARPS, WARPS * 2 * HS * 4, [
      dqb.ptr,
      dtCode(dqb.dtype),
      dy.ptr,
      dtCode(dy.dtype),
      qb.ptr,
      dtCode(qb.dtype),
      kb.ptr,
      dtCode(kb.dtype),
      vb.ptr,
      dtCode(vb.dtype),
      l.ptr,
      dtCode(l.dtype),
      dsum.ptr,
      B,
      T,
      NH,
      NKV,
      HS,
      scale,
      sg,
    ]);
    this.kernels.run(
      "attn_bwd_dkdv",
      Math.ceil((B * T * NKV) / WARPS),
      32 * WARPS,
      WARPS * 2 * HS * 4,
      [
        dkb.ptr,
        dtCode(dkb.dtype),
        dvb.ptr,
        dtCode(dvb.dtype),
        dy.ptr,
        dtCode(dy.dtype),
        qb.ptr,
        dtCode(qb.dtype),
        kb.ptr,
        dtCode(kb.dtype),
        vb.ptr,
        dtCode(vb.dtype),
        l.ptr,
        dtCode(l.dtype),
        dsum.ptr,
        B,
        T,
        NH,
        NKV,
        HS,
        scale,
        sg,
      ],
    );
    this.dropScratch(dsum);
  }

  kvCacheWrite(
    cache: DeviceBuffer,
    src: DeviceBuffer,
    B: number,
    T: number,
    Tcap: number,
    width: number,
    pos: number,
  ): void {
    const c = cudaBuf(cache, "kvCacheWrite cache"), s = cudaBuf(src, "kvCacheWrite src");
    if (pos < 0 || pos + T > Tcap) {
      throw new Error(`kvCacheWrite: rows ${pos}..${pos + T} exceed Tcap ${Tcap}`);
    }
    need(c, B * Tcap * width, "kvCacheWrite cache"); // (B, Tcap, width)
    need(s, B * T * width, "kvCacheWrite src"); // (B, T, width)
    this.kernels.run1d("kv_cache_write", B * T * width, [
      c.ptr,
      dtCode(c.dtype),
      s.ptr,
      dtCode(s.dtype),
      B,
      T,
      Tcap,
      width,
      pos,
    ]);
  }

  swigluForward(out: DeviceBuffer, gate: DeviceBuffer, up: DeviceBuffer, n: number): void {
    this.gatedForward("swiglu", out, gate, up, n);
  }

  swigluBackward(
    dgate: DeviceBuffer,
    dup: DeviceBuffer,
    dout: DeviceBuffer,
    gate: DeviceBuffer,
    up: DeviceBuffer,
    n: number,
  ): void {
    this.gatedBackward("swiglu", dgate, dup, dout, gate, up, n);
  }

  gegluForward(out: DeviceBuffer, gate: DeviceBuffer, up: DeviceBuffer, n: number): void {
    this.gatedForward("geglu", out, gate, up, n);
  }

  gegluBackward(
    dgate: DeviceBuffer,
    dup: DeviceBuffer,
    dout: DeviceBuffer,
    gate: DeviceBuffer,
    up: DeviceBuffer,
    n: number,
  ): void {
    this.gatedBackward("geglu", dgate, dup, dout, gate, up, n);
  }

  /** out(n) = act(gate) * up with the `<act>_fwd` kernel (SwiGLU, GeGLU). */
  private gatedForward(
    act: "swiglu" | "geglu",
    out: DeviceBuffer,
    gate: DeviceBuffer,
    up: DeviceBuffer,
    n: number,
  ): void {
    const o = cudaBuf(out, `${act} out`), g = cudaBuf(gate, `${act} gate`);
    const u = cudaBuf(up, `${act} up`);
    for (const [x, w] of [[o, "out"], [g, "gate"], [u, "up"]] as const) need(x, n, `${act} ${w}`);
    this.runVec(`${act}_fwd`, n, [
      o.ptr,
      dtCode(o.dtype),
      g.ptr,
      dtCode(g.dtype),
      u.ptr,
      dtCode(u.dtype),
      n,
    ]);
  }

  /** The backward of `gatedForward` with the `<act>_bwd` kernel: dgate, dup written. */
  private gatedBackward(
    act: "swiglu" | "geglu",
    dgate: DeviceBuffer,
    dup: DeviceBuffer,
    dout: DeviceBuffer,
    gate: DeviceBuffer,
    up: DeviceBuffer,
    n: number,
  ): void {
    const dg = cudaBuf(dgate, `${act} dgate`), du = cudaBuf(dup, `${act} dup`);
    const dy = cudaBuf(dout, `${act} dout`), g = cudaBuf(gate, `${act} gate`);
    const u = cudaBuf(up, `${act} up`);
    for (
      const [x, w] of [[dg, "dgate"], [du, "dup"], [dy, "dout"], [g, "gate"], [u, "up"]] as const
    ) {
      need(x, n, `${act} ${w}`);
    }
    this.runVec(`${act}_bwd`, n, [
      dg.ptr,
      dtCode(dg.dtype),
      du.ptr,
      dtCode(du.dtype),
      dy.ptr,
      dtCode(dy.dtype),
      g.ptr,
      dtCode(g.dtype),
      u.ptr,
      dtCode(u.dtype),
      n,
    ]);
  }

  crossEntropy(
    losses: DeviceBuffer,
    dlogits: DeviceBuffer | null,
    logits: DeviceBuffer,
    targets: DeviceBuffer,
    N: number,
    V: number,
    gradScale: number,
    hostTargets?: Int32Array,
  ): void {
    const { ls, lg, t, dptr, ddt } = this.ceOperands(
      "crossEntropy",
      losses,
      dlogits,
      logits,
      targets,
      N,
      V,
      hostTargets,
    );
    if (N === 0) return;
    this.kernels.run("cross_entropy", N, CE_THREADS, 0, [
      ls.ptr,
      dtCode(ls.dtype),
      dptr,
      ddt,
      lg.ptr,
      dtCode(lg.dtype),
      t.ptr,
      N,
      V,
      gradScale,
    ]);
  }

  distillCrossEntropy(
    losses: DeviceBuffer,
    kdLosses: DeviceBuffer,
    dlogits: DeviceBuffer | null,
    logits: DeviceBuffer,
    teacherLogits: DeviceBuffer,
    targets: DeviceBuffer,
    N: number,
    V: number,
    kdRatio: number,
    gradScale: number,
    hostTargets?: Int32Array,
  ): void {
    const { ls, lg, t, dptr, ddt } = this.ceOperands(
      "distillCrossEntropy",
      losses,
      dlogits,
      logits,
      targets,
      N,
      V,
      hostTargets,
    );
    const kd = cudaBuf(kdLosses, "distillCrossEntropy kdLosses");
    const te = cudaBuf(teacherLogits, "distillCrossEntropy teacherLogits");
    need(kd, N, "distillCrossEntropy kdLosses"); // (N)
    need(te, N * V, "distillCrossEntropy teacherLogits"); // (N, V)
    if (N === 0) return;
    this.kernels.run("distill_cross_entropy", N, CE_THREADS, 0, [
      ls.ptr,
      dtCode(ls.dtype),
      kd.ptr,
      dtCode(kd.dtype),
      dptr,
      ddt,
      lg.ptr,
      dtCode(lg.dtype),
      te.ptr,
      dtCode(te.dtype),
      t.ptr,
      N,
      V,
      kdRatio,
      gradScale,
    ]);
  }

  /**
   * The operands both cross-entropy kernels share, checked: losses (N), logits (N, V), i32
   * targets (N) within the vocabulary (the CPU backend's one-line error otherwise) and the
   * optional dlogits (N, V) as a pointer and dtype code (0n, 0 when null).
   */
  private ceOperands(
    op: string,
    losses: DeviceBuffer,
    dlogits: DeviceBuffer | null,
    logits: DeviceBuffer,
    targets: DeviceBuffer,
    N: number,
    V: number,
    hostTargets?: Int32Array,
  ) {
    const ls = cudaBuf(losses, `${op} losses`), lg = cudaBuf(logits, `${op} logits`);
    const t = cudaBuf(targets, `${op} targets`);
    need(ls, N, `${op} losses`); // (N)
    need(lg, N * V, `${op} logits`); // (N, V)
    need(t, N, `${op} targets`); // (N)
    if (t.dtype !== "i32") throw new Error(`${op} targets: expected an i32 buffer`);
    this.checkTargets(t, N, V, `${op} target check`, hostTargets);
    let dptr = 0n, ddt = 0;
    if (dlogits !== null) {
      const d = cudaBuf(dlogits, `${op} dlogits`);
      need(d, N * V, `${op} dlogits`); // (N, V)
      dptr = d.ptr;
      ddt = dtCode(d.dtype);
    }
    return { ls, lg, t, dptr, ddt };
  }

  /** The same one-line error as the CPU backend for a label outside the vocabulary. */
  private checkTargets(
    t: ReturnType<typeof cudaBuf>,
    N: number,
    V: number,
    label: string,
    hostTargets?: Int32Array,
  ): void {
    const tg = this.idsOnHost(t, N, label, hostTargets);
    for (let i = 0; i < N; i++) {
      if (tg[i] !== -100 && (tg[i] < 0 || tg[i] >= V)) {
        throw new TuneError(
          `target id ${tg[i]} at row ${i} is outside 0..${V - 1} (or -100 to ` +
            `ignore); check the dataset's labels against the model's vocabulary`,
        );
      }
    }
  }

  // ---- DoRA (kernels/dora.cu) ----------------------------------------------------------

  doraNorm(
    scale: DeviceBuffer,
    norm: DeviceBuffer,
    w: DeviceBuffer,
    ba: DeviceBuffer,
    magnitude: DeviceBuffer,
    s: number,
    O: number,
    I: number,
  ): void {
    const g = cudaBuf(scale, "doraNorm scale"), n = cudaBuf(norm, "doraNorm norm");
    const W = cudaBuf(w, "doraNorm w"), L = cudaBuf(ba, "doraNorm ba");
    const m = cudaBuf(magnitude, "doraNorm magnitude");
    float(W, "doraNorm w");
    need(W, O * I, "doraNorm w");
    for (
      const [b, what, len] of [[g, "scale", O], [n, "norm", O], [L, "ba", O * I], [
        m,
        "magnitude",
        O,
      ]] as const
    ) {
      if (b.dtype !== "f32") throw new Error(`doraNorm ${what}: expected f32, got ${b.dtype}`);
      need(b, len, `doraNorm ${what}`);
    }
    if (O <= 0 || I <= 0) return;
    this.kernels.run("dora_norm", O, THREADS, 0, [
      g.ptr,
      n.ptr,
      W.ptr,
      dtCode(W.dtype),
      L.ptr,
      m.ptr,
      s,
      O,
      I,
    ]);
  }

  scaleColumns(out: DeviceBuffer, inp: DeviceBuffer, v: DeviceBuffer, N: number, C: number): void {
    const o = cudaBuf(out, "scaleColumns"), x = cudaBuf(inp, "scaleColumns inp");
    const c = cudaBuf(v, "scaleColumns v");
    float(o, "scaleColumns");
    float(x, "scaleColumns inp");
    if (c.dtype !== "f32") throw new Error(`scaleColumns v: expected f32, got ${c.dtype}`);
    need(o, N * C, "scaleColumns");
    need(x, N * C, "scaleColumns inp");
    need(c, C, "scaleColumns v");
    this.kernels.run1d("scale_columns", N * C, [
      o.ptr,
      dtCode(o.dtype),
      x.ptr,
      dtCode(x.dtype),
      c.ptr,
      N,
      C,
    ]);
  }

  doraMagnitudeBackward(
    dmag: DeviceBuffer,
    dout: DeviceBuffer,
    z: DeviceBuffer,
    norm: DeviceBuffer,
    N: number,
    C: number,
  ): void {
    const d = cudaBuf(dmag, "doraMagnitudeBackward dmag");
    const dy = cudaBuf(dout, "doraMagnitudeBackward dout");
    const zz = cudaBuf(z, "doraMagnitudeBackward z");
    const n = cudaBuf(norm, "doraMagnitudeBackward norm");
    for (const [b, what] of [[d, "dmag"], [n, "norm"]] as const) {
      if (b.dtype !== "f32") throw new Error(`doraMagnitudeBackward ${what}: expected f32`);
      need(b, C, `doraMagnitudeBackward ${what}`);
    }
    float(dy, "doraMagnitudeBackward dout");
    float(zz, "doraMagnitudeBackward z");
    need(dy, N * C, "doraMagnitudeBackward dout");
    need(zz, N * C, "doraMagnitudeBackward z");
    if (C <= 0) return;
    this.kernels.run("dora_mag_bwd", Math.ceil(C / THREADS), THREADS, 0, [
      d.ptr,
      dy.ptr,
      dtCode(dy.dtype),
      zz.ptr,
      dtCode(zz.dtype),
      n.ptr,
      N,
      C,
    ]);
  }

  // ---- optimizer ----------------------------------------------------------------------

  adamw(
    params: DeviceBuffer,
    grads: DeviceBuffer,
    m: DeviceBuffer,
    v: DeviceBuffer,
    hp: AdamWParams,
  ): void {
    const p = cudaBuf(params, "adamw params"), g = cudaBuf(grads, "adamw grads");
    const mb = cudaBuf(m, "adamw m"), vb = cudaBuf(v, "adamw v");
    const n = p.length;
    for (const [x, w] of [[g, "grads"], [mb, "m"], [vb, "v"], [p, "params"]] as const) {
      need(x, n, `adamw ${w}`);
      float(x, `adamw ${w}`);
    }
    // Host-side constants exactly as src/backend/cpu/adamw.ts derives them.
    const { lr, beta1, beta2, eps, weightDecay, step } = hp;
    const decay = Math.fround(1 - lr * weightDecay);
    const bc1 = 1 - Math.pow(beta1, step);
    const bc2Sqrt = Math.sqrt(1 - Math.pow(beta2, step));
    this.kernels.run1d("adamw", n, [
      p.ptr,
      dtCode(p.dtype),
      g.ptr,
      dtCode(g.dtype),
      mb.ptr,
      dtCode(mb.dtype),
      vb.ptr,
      dtCode(vb.dtype),
      n,
      decay,
      beta1,
      1 - beta1,
      beta2,
      1 - beta2,
      eps,
      lr / bc1,
      bc2Sqrt,
    ]);
  }
}
