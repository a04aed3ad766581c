/**
 * The state every CUDA layer file works on: the device, its one stream, the caching
 * allocator, the loaded kernels, the cuBLASLt runner, the profiler, and the few helpers the
 * launchers share (scratch buffers, waiting for the stream, vectorised grid sizes). The
 * layer files (memory.ts, matmul.ts, norm.ts, ...) are functions of a `CudaContext`;
 * backend.ts is the dispatcher that holds one and implements the op interface with them.
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
import { GemmRunner } from "../../../ffi/cublaslt.ts";
import type { DType } from "../ops.ts";
import { CachingAllocator } from "./allocator.ts";
import { CudaBuffer, ELEM_BYTES } from "./buffer.ts";
import type { AttentionKernels } from "./flash_attention.ts";
import { type KernelName, KernelSet, THREADS } from "./kernels.ts";
import { GpuProfiler } from "./profile.ts";

/** cuBLASLt workspace size. */
const WORKSPACE_BYTES = 32 * 1024 * 1024;
/** Most blocks of the first reduction pass (their number depends on n only, so a sum of
 * the same buffer is deterministic). */
export const REDUCE_BLOCKS = 256;
/** Most 256-thread blocks per SM of the vectorised grid-stride kernels (see runVec). */
const VEC_BLOCKS_PER_SM = 64;

/** What the context is made from (CudaBackendOptions less the collectives). */
export interface CudaContextOptions {
  /** GPU ordinal; default TUNE_CUDA_DEVICE, else LOCAL_RANK, else 0. */
  device?: number;
  /** fp32 matrix products on TF32 tensor cores (default TUNE_CUDA_TF32=1, else off). */
  tf32?: boolean;
  /** Attention kernels (default TUNE_CUDA_ATTN, else "flash"); see flash_attention.ts. */
  attention?: AttentionKernels;
}

function defaultOrdinal(): number {
  for (const v of ["TUNE_CUDA_DEVICE", "LOCAL_RANK"]) {
    const s = Deno.env.get(v);
    if (s !== undefined && /^\d+$/.test(s)) return Number(s);
  }
  return 0;
}

/** One GPU's stream, memory, kernels and cuBLASLt, shared by the layer files. */
export class CudaContext {
  /** The GPU (name, memory, driver version, compute capability). */
  readonly info: DeviceInfo;
  readonly device: number;
  readonly lib: CudaLib;
  readonly stream: Deno.PointerValue;
  readonly alloc_ = new CachingAllocator();
  readonly kernels: KernelSet;
  readonly gemm: GemmRunner;
  readonly reduceScratch: CudaBuffer; // (REDUCE_BLOCKS + 1) f32
  readonly workspace: CudaBuffer; // cuBLASLt workspace (bytes, not elements)
  readonly reduceOut = new Float32Array(1);
  /** Bytes of the live buffers made by alloc. */
  liveBytes = 0;
  readonly tf32: boolean;
  readonly attentionKernels: AttentionKernels;
  readonly profiler: GpuProfiler;
  /** Vectors of ones by dtype (see matmul.ts onesOf). */
  readonly ones = new Map<DType, CudaBuffer>();

  constructor(opts: CudaContextOptions = {}) {
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
  }

  /** Wait for the stream; while profiling, the host time blocked is noted under `why`. */
  waitStream(why: string): void {
    if (!this.profiler.active) {
      check("cuStreamSynchronize", this.lib.cuStreamSynchronize(this.stream));
      return;
    }
    const t0 = performance.now();
    check("cuStreamSynchronize", this.lib.cuStreamSynchronize(this.stream));
    this.profiler.hostWait(why, performance.now() - t0);
  }

  /**
   * The first n ints of an i32 buffer on the host: the caller's host copy when given (its
   * length checked), else a download (which waits for the stream).
   */
  idsOnHost(b: CudaBuffer, n: number, why: string, host?: Int32Array): Int32Array {
    if (host !== undefined) {
      if (host.length !== n) throw new Error(`${why}: ${host.length} host ids for ${n} rows`);
      return host;
    }
    this.waitStream(`ids to host: ${why}`);
    const out = new Int32Array(n);
    if (n > 0) this.dtoh(new Uint8Array(out.buffer), b);
    return out;
  }

  /** Synchronous device-to-host copy of dst.byteLength bytes from s. */
  dtoh(dst: Uint8Array, s: CudaBuffer): void {
    check(
      "cuMemcpyDtoH_v2",
      this.lib.cuMemcpyDtoH_v2(dst, s.ptr, BigInt(dst.byteLength)),
    );
  }

  /** Internal scratch of n elements (stream-ordered reuse makes free-after-queue safe). */
  scratch(n: number, dtype: DType): CudaBuffer {
    const { ptr, blockBytes } = this.alloc_.alloc(Math.max(n * ELEM_BYTES[dtype], 1));
    return new CudaBuffer(ptr, n, dtype, blockBytes, false);
  }

  /** Give a scratch buffer back to the allocator. */
  dropScratch(b: CudaBuffer): void {
    this.alloc_.release(b.ptr, b.blockBytes);
  }

  /**
   * Launch a grid-stride kernel over n elements whose fast path (16-byte aligned buffers)
   * takes 8 elements per thread per step: enough 256-thread blocks for n / 8 threads, at
   * most VEC_BLOCKS_PER_SM per SM (the loop covers the rest; the unaligned path, one
   * element per step, is covered the same way).
   */
  runVec(
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

  /**
   * Release the cuBLASLt handle, the stream and every cached block (the caller waited for
   * the stream). Buffers still alive stay allocated until the process ends.
   */
  release(): void {
    this.profiler.destroy();
    this.gemm.destroy();
    this.dropScratch(this.workspace);
    this.dropScratch(this.reduceScratch);
    for (const b of this.ones.values()) this.dropScratch(b);
    this.ones.clear();
    this.alloc_.releaseCached();
    check("cuStreamDestroy_v2", this.lib.cuStreamDestroy_v2(this.stream));
  }
}
