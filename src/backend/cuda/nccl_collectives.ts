/**
 * Collectives over NCCL for CUDA buffers, queued on the backend's stream. Rank 0 makes the
 * unique id (`ncclUniqueId()` in ffi/nccl.ts) and sends it to the other ranks (the TCP
 * store of src/distributed/); every rank then passes it to createCudaBackend({ nccl }).
 * NCCL refuses two ranks on one GPU, so on a one-GPU machine only world size 1 runs.
 */
import { checkNccl, nccl, NCCL_OP, NCCL_TYPE, ncclCommInitRank } from "../../../ffi/nccl.ts";
import type { Collectives, DeviceBuffer, DType } from "../ops.ts";
import { cudaBuf } from "./buffer.ts";

/** Where a CUDA backend joins an NCCL communicator. */
export interface NcclOptions {
  /** The 128-byte ncclUniqueId made by rank 0. */
  uniqueId: Uint8Array;
  rank: number;
  worldSize: number;
}

function ncclType(d: DType): number {
  return d === "bf16" ? NCCL_TYPE.BF16 : d === "i32" ? NCCL_TYPE.I32 : NCCL_TYPE.F32;
}

/** Collectives of one rank over an NCCL communicator. */
export class NcclCollectives implements Collectives {
  readonly rank: number;
  readonly worldSize: number;
  private readonly comm: Deno.PointerValue;

  /** Join the communicator (blocks until every rank has joined). */
  constructor(
    opts: NcclOptions,
    private readonly stream: Deno.PointerValue,
    private readonly syncStream: () => void,
    private readonly scratch: DeviceBuffer, // (1) f32, for barrier()
  ) {
    this.rank = opts.rank;
    this.worldSize = opts.worldSize;
    this.comm = ncclCommInitRank(opts.uniqueId, opts.worldSize, opts.rank);
  }

  allReduceSum(buf: DeviceBuffer): Promise<void> {
    const b = cudaBuf(buf, "allReduceSum");
    checkNccl(
      "ncclAllReduce",
      nccl().ncclAllReduce(
        b.ptr,
        b.ptr,
        BigInt(b.length),
        ncclType(b.dtype),
        NCCL_OP.SUM,
        this.comm,
        this.stream,
      ),
    );
    return Promise.resolve();
  }

  reduceScatterSum(out: DeviceBuffer, inp: DeviceBuffer): Promise<void> {
    const o = cudaBuf(out, "reduceScatterSum out"), x = cudaBuf(inp, "reduceScatterSum inp");
    if (x.length !== o.length * this.worldSize || o.dtype !== x.dtype) {
      throw new Error(`reduceScatterSum: inp ${x.length} ${x.dtype} != ${this.worldSize} x out`);
    }
    checkNccl(
      "ncclReduceScatter",
      nccl().ncclReduceScatter(
        x.ptr,
        o.ptr,
        BigInt(o.length),
        ncclType(o.dtype),
        NCCL_OP.SUM,
        this.comm,
        this.stream,
      ),
    );
    return Promise.resolve();
  }

  allGather(out: DeviceBuffer, inp: DeviceBuffer): Promise<void> {
    const o = cudaBuf(out, "allGather out"), x = cudaBuf(inp, "allGather inp");
    if (o.length !== x.length * this.worldSize || o.dtype !== x.dtype) {
      throw new Error(`allGather: out ${o.length} ${o.dtype} != ${this.worldSize} x inp`);
    }
    checkNccl(
      "ncclAllGather",
      nccl().ncclAllGather(
        x.ptr,
        o.ptr,
        BigInt(x.length),
        ncclType(x.dtype),
        this.comm,
        this.stream,
      ),
    );
    return Promise.resolve();
  }

  broadcast(buf: DeviceBuffer, root: number): Promise<void> {
    const b = cudaBuf(buf, "broadcast");
    checkNccl(
      "ncclBroadcast",
      nccl().ncclBroadcast(
        b.ptr,
        b.ptr,
        BigInt(b.length),
        ncclType(b.dtype),
        root,
        this.comm,
        this.stream,
      ),
    );
    return Promise.resolve();
  }

  /** Every rank reaches this point: a one-element all-reduce, then the stream drains. */
  async barrier(): Promise<void> {
    await this.allReduceSum(this.scratch);
    this.syncStream();
  }
}
