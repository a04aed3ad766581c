/**
 * `Collectives` on NVIDIA GPUs through NCCL (ffi/nccl.ts).
 *
 * Set-up, after the CUDA backend made this rank's device current:
 *
 *   const group = await initProcessGroup();
 *   const nccl = new NcclCollectives(group);
 *   const backend = createCudaBackend({ device: cudaDeviceOrdinal(group.info, n), collectives: nccl });
 *   await nccl.init(); // rank 0 makes the unique id, the TCP store hands it out
 *
 * Ordering: the collectives run on the legacy default stream (stream 0). The CUDA
 * backend's stream is a blocking stream, which the legacy stream synchronizes with in
 * both directions, so a collective starts after the kernels queued before it and the
 * kernels queued after it wait for it, with no host synchronization. The promises resolve
 * once the work is queued; `barrier` waits for the device and then meets the other ranks
 * over the CPU mesh.
 *
 * Failure: a lost rank makes NCCL wait; the launcher stops the job (it notices the lost
 * process), and the CPU mesh names the rank at the next `barrier`.
 */
import { cuda } from "../../../ffi/cuda.ts";
import {
  checkNccl,
  nccl,
  NCCL_OP,
  NCCL_TYPE,
  NCCL_UNIQUE_ID_BYTES,
  ncclCommInitRank,
  ncclUniqueId,
} from "../../../ffi/nccl.ts";
import { TuneError } from "../../errors.ts";
import type { Collectives, DeviceBuffer, DType } from "../ops.ts";

/**
 * What NCCL's set-up needs of the job's process group (src/distributed/process_group.ts's
 * `ProcessGroup` is one): this rank, the job size, the rendezvous store that hands out the
 * unique id (null in a job of one) and a barrier over the CPU mesh. Declared here so the
 * backend does not import the distributed layer above it.
 */
export interface NcclRendezvous {
  readonly rank: number;
  readonly worldSize: number;
  readonly store: {
    set(key: string, value: Uint8Array): Promise<void>;
    get(key: string): Promise<Uint8Array>;
  } | null;
  barrier(): Promise<void>;
}

/** A device buffer with its device address (the CUDA backend's `CudaBuffer`). */
interface DevicePointerBuffer extends DeviceBuffer {
  readonly ptr: bigint;
}

const NCCL_DTYPE: Readonly<Record<DType, number>> = {
  f32: NCCL_TYPE.F32,
  bf16: NCCL_TYPE.BF16,
  i32: NCCL_TYPE.I32,
};

function dev(buf: DeviceBuffer, what: string): DevicePointerBuffer {
  const ptr = (buf as Partial<DevicePointerBuffer>).ptr;
  if (typeof ptr !== "bigint") throw new Error(`${what}: not a CUDA buffer`);
  return buf as DevicePointerBuffer;
}

/** NCCL's element count and data type of a buffer. */
function span(b: DevicePointerBuffer): [bigint, number] {
  return [BigInt(b.length), NCCL_DTYPE[b.dtype]];
}

/** Collectives over one NCCL communicator spanning the process group. */
export class NcclCollectives implements Collectives {
  #comm: Deno.PointerValue = null;
  #initialized: Promise<void> | null = null;
  #instance: number;
  static #made = 0;

  constructor(
    private readonly group: NcclRendezvous,
    /** The CUDA stream to queue on; null is the legacy default stream (see above). */
    private readonly stream: Deno.PointerValue = null,
  ) {
    this.#instance = NcclCollectives.#made++;
  }

  get rank(): number {
    return this.group.rank;
  }

  get worldSize(): number {
    return this.group.worldSize;
  }

  /**
   * Create the communicator: rank 0 makes a unique id and puts it in the TCP store, the
   * others fetch it, every rank meets at a barrier (rank 0 keeps serving the store until
   * all have it), then all join with ncclCommInitRank. Call it once the CUDA backend exists
   * (its device must be current); collectives call it themselves otherwise.
   */
  init(): Promise<void> {
    return (this.#initialized ??= this.#init());
  }

  async #init(): Promise<void> {
    const W = this.group.worldSize;
    const key = `tune/nccl/${this.#instance}/id`;
    let id: Uint8Array;
    if (this.group.store === null) {
      id = ncclUniqueId();
    } else if (this.group.rank === 0) {
      id = ncclUniqueId();
      await this.group.store.set(key, id);
    } else {
      id = await this.group.store.get(key);
    }
    if (id.length !== NCCL_UNIQUE_ID_BYTES) {
      throw new TuneError(
        `the NCCL unique id from the store has ${id.length} bytes, not ${NCCL_UNIQUE_ID_BYTES}; restart the job`,
      );
    }
    await this.group.barrier();
    this.#comm = ncclCommInitRank(id, W, this.group.rank);
  }

  /** buf = sum over ranks of buf. */
  async allReduceSum(buf: DeviceBuffer): Promise<void> {
    await this.init();
    const b = dev(buf, "allReduceSum");
    const [n, dt] = span(b);
    const status = nccl().ncclAllReduce(b.ptr, b.ptr, n, dt, NCCL_OP.SUM, this.#comm, this.stream);
    checkNccl("ncclAllReduce", status);
  }

  /** out(n) = slice `rank` of the sum over ranks of inp(W * n). */
  async reduceScatterSum(out: DeviceBuffer, inp: DeviceBuffer): Promise<void> {
    await this.init();
    const [i, o] = this.#shards("reduceScatterSum", "inp", inp, out);
    const [n, dt] = span(o);
    const status = nccl().ncclReduceScatter(
      i.ptr,
      o.ptr,
      n,
      dt,
      NCCL_OP.SUM,
      this.#comm,
      this.stream,
    );
    checkNccl("ncclReduceScatter", status);
  }

  /** out(W * n) = concatenation over ranks of inp(n). */
  async allGather(out: DeviceBuffer, inp: DeviceBuffer): Promise<void> {
    await this.init();
    const [o, i] = this.#shards("allGather", "out", out, inp);
    const [n, dt] = span(i);
    checkNccl("ncclAllGather", nccl().ncclAllGather(i.ptr, o.ptr, n, dt, this.#comm, this.stream));
  }

  /**
   * The operands of a collective between a whole buffer and one rank's shard: `whole`
   * (named `wholeName` in the error) holds worldSize times `shard`'s elements, same dtype.
   */
  #shards(
    op: string,
    wholeName: string,
    whole: DeviceBuffer,
    shard: DeviceBuffer,
  ): [DevicePointerBuffer, DevicePointerBuffer] {
    const w = dev(whole, op), s = dev(shard, op);
    if (w.length !== this.worldSize * s.length || w.dtype !== s.dtype) {
      throw new Error(
        `${op}: ${wholeName} has ${w.length} elements, want ${this.worldSize} * ${s.length}`,
      );
    }
    return [w, s];
  }

  /** buf = buf of rank `root`. */
  async broadcast(buf: DeviceBuffer, root: number): Promise<void> {
    await this.init();
    const b = dev(buf, "broadcast");
    const [n, dt] = span(b);
    checkNccl(
      "ncclBroadcast",
      nccl().ncclBroadcast(b.ptr, b.ptr, n, dt, root, this.#comm, this.stream),
    );
  }

  /** Wait for this device's queued work, then for every rank to get here. */
  async barrier(): Promise<void> {
    await this.init();
    const status = cuda().cuCtxSynchronize();
    if (status !== 0) throw new Error(`cuCtxSynchronize failed (CUresult ${status})`);
    await this.group.barrier();
  }

  /** Free the communicator (after the device finished its queued work). */
  destroy(): void {
    if (this.#comm === null) return;
    cuda().cuCtxSynchronize();
    checkNccl("ncclCommDestroy", nccl().ncclCommDestroy(this.#comm));
    this.#comm = null;
  }
}
