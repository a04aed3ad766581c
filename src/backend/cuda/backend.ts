/**
 * The CUDA backend: bf16 activations and weights, fp32 accumulation (cuBLASLt compute
 * 32F, fp32 arithmetic in every kernel), fp32 master weights and optimizer state where
 * the caller allocates them as f32 (a DeviceBuffer's dtype tells). One stream; a caching
 * allocator; kernels from the embedded PTX of kernels/*.cu (their CPU twins in
 * src/backend/cpu/ are the specification).
 *
 * Host-visible results (download, sum, sumSquares) wait for the stream. Everything else
 * is queued.
 *
 * This file is the dispatcher: `CudaBackend` holds a `CudaContext` (context.ts: device,
 * stream, allocator, kernels, cuBLASLt, profiler) and hands each op to the file of its
 * layer, which shares its name with the kernel file and the CPU twin where there is one:
 *
 *   memory.ts        alloc, view, upload, download, fill, copy, free, sync, timeMs
 *   elementwise.ts   add, mul, axpy, scale, sum, sumSquares, dropoutMask   elementwise.cu
 *   matmul.ts        matmulForward/Backward/Batched (cuBLASLt)              cpu/gemm.ts
 *   embedding.ts     embeddingForward/Backward                              elementwise.cu
 *   norm.ts          rmsnormForward/Backward                                layers.cu
 *   rope.ts          rope                                                   layers.cu
 *   attention.ts     attentionForward/Backward, kvCacheWrite    attention.cu, flash_attention.cu
 *   attention_variant.ts  windowed/soft-capped attention, softcap  attention_variant.cu
 *   activations.ts   swiglu*, geglu*                                 layers.cu, geglu.cu
 *   loss.ts          crossEntropy, distillCrossEntropy                 layers.cu, distill.cu
 *   adapters.ts      doraNorm, scaleColumns, doraMagnitudeBackward          dora.cu
 *   optimizer.ts     adamw                                   elementwise.cu, cpu/adamw.ts
 *   offload.ts       activationOffloader (side stream, pinned host memory; ../offload.ts)
 *
 * A new op: its launcher goes in its layer's file (a new file for a new layer), its kernel
 * in kernels/<layer>.cu with its argument kinds in kernels.ts, and one entry in LAYER_FNS
 * here.
 */
import { type Backend, type Collectives, type DType, SingleProcessCollectives } from "../ops.ts";
import { CudaContext, type CudaContextOptions } from "./context.ts";
import { formatProfile, type ProfileReport, type ProfileRow } from "./profile.ts";
import * as memory from "./memory.ts";
import * as elementwise from "./elementwise.ts";
import * as matmul from "./matmul.ts";
import * as embedding from "./embedding.ts";
import * as norm from "./norm.ts";
import * as rope from "./rope.ts";
import * as attention from "./attention.ts";
import * as variants from "./attention_variant.ts";
import * as activations from "./activations.ts";
import * as loss from "./loss.ts";
import * as adapters from "./adapters.ts";
import * as optimizer from "./optimizer.ts";
import * as nf4 from "./nf4.ts";
import type { ActivationOffloader } from "../offload.ts";
import { CudaOffloader } from "./offload.ts";

/** Options of createCudaBackend. */
export interface CudaBackendOptions extends CudaContextOptions {
  /** Collectives for multi-process runs (default: single process). */
  collectives?: Collectives;
}

/**
 * The layer function of each op (and of bytesReserved, timeMs, matmulBatched, which only
 * this backend has): it takes the context, then the op's arguments. CudaBackend gets one
 * method per entry that calls it on its context.
 */
const LAYER_FNS = {
  alloc: memory.alloc,
  view: memory.view,
  upload: memory.upload,
  download: memory.download,
  fill: memory.fill,
  copy: memory.copy,
  free: memory.free,
  sync: memory.sync,
  bytesInUse: memory.bytesInUse,
  bytesReserved: memory.bytesReserved,
  timeMs: memory.timeMs,
  add: elementwise.add,
  mul: elementwise.mul,
  axpy: elementwise.axpy,
  scale: elementwise.scale,
  sum: elementwise.sum,
  sumSquares: elementwise.sumSquares,
  dropoutMask: elementwise.dropoutMask,
  matmulForward: matmul.matmulForward,
  matmulBatched: matmul.matmulBatched,
  matmulBackward: matmul.matmulBackward,
  embeddingForward: embedding.embeddingForward,
  embeddingBackward: embedding.embeddingBackward,
  rmsnormForward: norm.rmsnormForward,
  rmsnormBackward: norm.rmsnormBackward,
  rope: rope.rope,
  attentionForward: attention.attentionForward,
  attentionBackward: attention.attentionBackward,
  kvCacheWrite: attention.kvCacheWrite,
  softcap: variants.softcap,
  softcapBackward: variants.softcapBackward,
  swigluForward: activations.swigluForward,
  swigluBackward: activations.swigluBackward,
  gegluForward: activations.gegluForward,
  gegluBackward: activations.gegluBackward,
  crossEntropy: loss.crossEntropy,
  distillCrossEntropy: loss.distillCrossEntropy,
  doraNorm: adapters.doraNorm,
  scaleColumns: adapters.scaleColumns,
  doraMagnitudeBackward: adapters.doraMagnitudeBackward,
  nf4Dequantize: nf4.nf4Dequantize,
  nf4MatmulForward: nf4.nf4MatmulForward,
  nf4MatmulBackward: nf4.nf4MatmulBackward,
  adamw: optimizer.adamw,
};
type LayerFns = typeof LAYER_FNS;

/** The methods LAYER_FNS gives CudaBackend: each layer function without its context. */
type LayerMethods = {
  [K in keyof LayerFns]: LayerFns[K] extends (ctx: CudaContext, ...a: infer A) => infer R
    ? (...a: A) => R
    : never;
};

/**
 * Open the driver, cuBLASLt and the kernels and return the CUDA backend.
 * Without a driver it throws a one-line TuneError naming libcuda.so.1.
 */
export function createCudaBackend(opts: CudaBackendOptions = {}): CudaBackend {
  return new CudaBackend(opts);
}

/** The methods of CudaBackend made from LAYER_FNS (declared here, defined in its static block). */
export interface CudaBackend extends LayerMethods {}

/** A Backend on one NVIDIA GPU. */
export class CudaBackend implements Backend {
  readonly name = "cuda" as const;
  readonly computeDtype: DType = "bf16";
  readonly collectives: Collectives;
  private readonly ctx: CudaContext;
  /** Profiling since construction (TUNE_CUDA_PROFILE=1): the table goes to stderr at the end. */
  private envProfile = false;
  /** The report of the last stopProfile(). */
  lastProfile: ProfileReport | null = null;
  private profileReserved = 0;

  constructor(opts: CudaBackendOptions = {}) {
    this.ctx = new CudaContext(opts);
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

  /** The GPU (name, memory, driver version, compute capability). */
  get info(): CudaContext["info"] {
    return this.ctx.info;
  }

  /** The GPU ordinal. */
  get device(): number {
    return this.ctx.device;
  }

  // ---- profiling ----------------------------------------------------------------------

  /**
   * Time every kernel, matmul, memset and device copy from now on (src/backend/cuda/profile.ts);
   * a profile already running restarts.
   */
  startProfile(): void {
    this.profileReserved = this.ctx.alloc_.reservedBytes;
    this.ctx.profiler.start();
  }

  /** Stop profiling (one sync): rows by total GPU time; the whole report is `lastProfile`. */
  stopProfile(): ProfileRow[] {
    const newDeviceBytes = this.ctx.alloc_.reservedBytes - this.profileReserved;
    this.lastProfile = { ...this.ctx.profiler.stop(), newDeviceBytes };
    return this.lastProfile.rows;
  }

  /** TUNE_CUDA_PROFILE=1: the profile since construction, to stderr, once. */
  private printEnvProfile(): void {
    if (!this.envProfile || !this.ctx.profiler.active) return;
    this.envProfile = false;
    this.stopProfile();
    console.error(`# TUNE_CUDA_PROFILE (${this.ctx.info.name})`);
    for (const l of formatProfile(this.lastProfile!, 40)) console.error(l);
  }

  /**
   * Release the cuBLASLt handle, the stream and every cached block. Buffers still alive
   * stay allocated until the process ends; the backend must not be used afterwards.
   */
  destroy(): void {
    this.sync();
    this.printEnvProfile();
    this.ctx.release();
  }

  /** Activation offloading (src/backend/offload.ts): a side stream, events, pinned host memory. */
  activationOffloader(): ActivationOffloader {
    return new CudaOffloader(this.ctx);
  }

  // Every op and the CUDA-only extras of LAYER_FNS: the layer function on this context.
  static {
    for (const name of Object.keys(LAYER_FNS) as (keyof LayerFns)[]) {
      const f = LAYER_FNS[name] as (ctx: CudaContext, ...a: unknown[]) => unknown;
      Object.defineProperty(this.prototype, name, {
        value(this: CudaBackend, ...a: unknown[]): unknown {
          return f(this.ctx, ...a);
        },
        writable: true,
        configurable: true,
      });
    }
  }
}
