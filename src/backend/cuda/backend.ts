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
 *
 * A new op: its launcher goes in its layer's file (a new file for a new layer), its kernel
 * in kernels/<layer>.cu with its argument kinds in kernels.ts, and one delegate here.
 */
import {
  type Backend,
  type Collectives,
  type DeviceBuffer,
  type DType,
  SingleProcessCollectives,
} from "../ops.ts";
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

/** Options of createCudaBackend. */
export interface CudaBackendOptions extends CudaContextOptions {
  /** Collectives for multi-process runs (default: single process). */
  collectives?: Collectives;
}

/** The arguments of a layer function after its context. */
type Args<F> = F extends (ctx: CudaContext, ...a: infer A) => unknown ? A : never;

/**
 * Open the driver, cuBLASLt and the kernels and return the CUDA backend.
 * Without a driver it throws a one-line TuneError naming libcuda.so.1.
 */
export function createCudaBackend(opts: CudaBackendOptions = {}): CudaBackend {
  return new CudaBackend(opts);
}

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

  // ---- memory.ts ------------------------------------------------------------
  alloc(...a: Args<typeof memory.alloc>): DeviceBuffer {
    return memory.alloc(this.ctx, ...a);
  }
  view(...a: Args<typeof memory.view>): DeviceBuffer {
    return memory.view(this.ctx, ...a);
  }
  upload(...a: Args<typeof memory.upload>): void {
    memory.upload(this.ctx, ...a);
  }
  download(...a: Args<typeof memory.download>): Float32Array | Int32Array {
    return memory.download(this.ctx, ...a);
  }
  fill(...a: Args<typeof memory.fill>): void {
    memory.fill(this.ctx, ...a);
  }
  copy(...a: Args<typeof memory.copy>): void {
    memory.copy(this.ctx, ...a);
  }
  free(...a: Args<typeof memory.free>): void {
    memory.free(this.ctx, ...a);
  }
  sync(...a: Args<typeof memory.sync>): void {
    memory.sync(this.ctx, ...a);
  }
  bytesInUse(...a: Args<typeof memory.bytesInUse>): number {
    return memory.bytesInUse(this.ctx, ...a);
  }
  bytesReserved(...a: Args<typeof memory.bytesReserved>): number {
    return memory.bytesReserved(this.ctx, ...a);
  }
  timeMs(...a: Args<typeof memory.timeMs>): number {
    return memory.timeMs(this.ctx, ...a);
  }
  // ---- elementwise.ts -------------------------------------------------------
  add(...a: Args<typeof elementwise.add>): void {
    elementwise.add(this.ctx, ...a);
  }
  mul(...a: Args<typeof elementwise.mul>): void {
    elementwise.mul(this.ctx, ...a);
  }
  axpy(...a: Args<typeof elementwise.axpy>): void {
    elementwise.axpy(this.ctx, ...a);
  }
  scale(...a: Args<typeof elementwise.scale>): void {
    elementwise.scale(this.ctx, ...a);
  }
  sum(...a: Args<typeof elementwise.sum>): number {
    return elementwise.sum(this.ctx, ...a);
  }
  sumSquares(...a: Args<typeof elementwise.sumSquares>): number {
    return elementwise.sumSquares(this.ctx, ...a);
  }
  dropoutMask(...a: Args<typeof elementwise.dropoutMask>): void {
    elementwise.dropoutMask(this.ctx, ...a);
  }
  // ---- matmul.ts ------------------------------------------------------------
  matmulForward(...a: Args<typeof matmul.matmulForward>): void {
    matmul.matmulForward(this.ctx, ...a);
  }
  matmulBatched(...a: Args<typeof matmul.matmulBatched>): void {
    matmul.matmulBatched(this.ctx, ...a);
  }
  matmulBackward(...a: Args<typeof matmul.matmulBackward>): void {
    matmul.matmulBackward(this.ctx, ...a);
  }
  // ---- embedding.ts ---------------------------------------------------------
  embeddingForward(...a: Args<typeof embedding.embeddingForward>): void {
    embedding.embeddingForward(this.ctx, ...a);
  }
  embeddingBackward(...a: Args<typeof embedding.embeddingBackward>): void {
    embedding.embeddingBackward(this.ctx, ...a);
  }
  // ---- norm.ts --------------------------------------------------------------
  rmsnormForward(...a: Args<typeof norm.rmsnormForward>): void {
    norm.rmsnormForward(this.ctx, ...a);
  }
  rmsnormBackward(...a: Args<typeof norm.rmsnormBackward>): void {
    norm.rmsnormBackward(this.ctx, ...a);
  }
  // ---- rope.ts --------------------------------------------------------------
  rope(...a: Args<typeof rope.rope>): void {
    rope.rope(this.ctx, ...a);
  }
  // ---- attention.ts ---------------------------------------------------------
  attentionForward(...a: Args<typeof attention.attentionForward>): void {
    attention.attentionForward(this.ctx, ...a);
  }
  attentionBackward(...a: Args<typeof attention.attentionBackward>): void {
    attention.attentionBackward(this.ctx, ...a);
  }
  kvCacheWrite(...a: Args<typeof attention.kvCacheWrite>): void {
    attention.kvCacheWrite(this.ctx, ...a);
  }
  softcap(...a: Args<typeof variants.softcap>): void {
    variants.softcap(this.ctx, ...a);
  }
  softcapBackward(...a: Args<typeof variants.softcapBackward>): void {
    variants.softcapBackward(this.ctx, ...a);
  }
  // ---- activations.ts -------------------------------------------------------
  swigluForward(...a: Args<typeof activations.swigluForward>): void {
    activations.swigluForward(this.ctx, ...a);
  }
  swigluBackward(...a: Args<typeof activations.swigluBackward>): void {
    activations.swigluBackward(this.ctx, ...a);
  }
  gegluForward(...a: Args<typeof activations.gegluForward>): void {
    activations.gegluForward(this.ctx, ...a);
  }
  gegluBackward(...a: Args<typeof activations.gegluBackward>): void {
    activations.gegluBackward(this.ctx, ...a);
  }
  // ---- loss.ts --------------------------------------------------------------
  crossEntropy(...a: Args<typeof loss.crossEntropy>): void {
    loss.crossEntropy(this.ctx, ...a);
  }
  distillCrossEntropy(...a: Args<typeof loss.distillCrossEntropy>): void {
    loss.distillCrossEntropy(this.ctx, ...a);
  }
  // ---- adapters.ts ----------------------------------------------------------
  doraNorm(...a: Args<typeof adapters.doraNorm>): void {
    adapters.doraNorm(this.ctx, ...a);
  }
  scaleColumns(...a: Args<typeof adapters.scaleColumns>): void {
    adapters.scaleColumns(this.ctx, ...a);
  }
  doraMagnitudeBackward(...a: Args<typeof adapters.doraMagnitudeBackward>): void {
    adapters.doraMagnitudeBackward(this.ctx, ...a);
  }
  // ---- nf4.ts (QLoRA base weights) -----------------------------------------
  nf4Dequantize(...a: Args<typeof nf4.nf4Dequantize>): void {
    nf4.nf4Dequantize(this.ctx, ...a);
  }
  nf4MatmulForward(...a: Args<typeof nf4.nf4MatmulForward>): void {
    nf4.nf4MatmulForward(this.ctx, ...a);
  }
  nf4MatmulBackward(...a: Args<typeof nf4.nf4MatmulBackward>): void {
    nf4.nf4MatmulBackward(this.ctx, ...a);
  }
  // ---- optimizer.ts ---------------------------------------------------------
  adamw(...a: Args<typeof optimizer.adamw>): void {
    optimizer.adamw(this.ctx, ...a);
  }
}
