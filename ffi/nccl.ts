/**
 * NCCL 2 bindings (libnccl.so.2), opened lazily. Values from nccl.h:
 * ncclDataType_t Int32 2, Float16 6, Float32 7, Bfloat16 9; ncclRedOp_t Sum 0, Avg 4;
 * ncclUniqueId is a 128-byte struct passed BY VALUE to ncclCommInitRank (slow FFI path,
 * fine for a one-off call).
 */

import { LIBNCCL, openLibrary } from "./library_path.ts";

/** Byte size of ncclUniqueId (NCCL_UNIQUE_ID_BYTES). */
export const NCCL_UNIQUE_ID_BYTES = 128;

const UNIQUE_ID = { struct: Array(NCCL_UNIQUE_ID_BYTES).fill("u8") } as const;

/** The NCCL symbols we use, with their C types. */
export const NCCL_SYMBOLS = {
  ncclGetVersion: { parameters: ["buffer"], result: "i32" }, // (int*)
  ncclGetUniqueId: { parameters: ["buffer"], result: "i32" }, // (ncclUniqueId*)
  // (ncclComm_t*, int nranks, ncclUniqueId commId, int rank)
  ncclCommInitRank: { parameters: ["buffer", "i32", UNIQUE_ID, "i32"], result: "i32" },
  ncclCommDestroy: { parameters: ["pointer"], result: "i32" },
  ncclGetErrorString: { parameters: ["i32"], result: "pointer" }, // const char*
  // (const void* send, void* recv, size_t count, ncclDataType_t, ncclRedOp_t, comm, stream)
  ncclAllReduce: {
    parameters: ["u64", "u64", "usize", "i32", "i32", "pointer", "pointer"],
    result: "i32",
  },
  // (send, recv, size_t recvcount, type, op, comm, stream)
  ncclReduceScatter: {
    parameters: ["u64", "u64", "usize", "i32", "i32", "pointer", "pointer"],
    result: "i32",
  },
  // (send, recv, size_t sendcount, type, comm, stream)
  ncclAllGather: {
    parameters: ["u64", "u64", "usize", "i32", "pointer", "pointer"],
    result: "i32",
  },
  // (send, recv, size_t count, type, int root, comm, stream)
  ncclBroadcast: {
    parameters: ["u64", "u64", "usize", "i32", "i32", "pointer", "pointer"],
    result: "i32",
  },
  ncclGroupStart: { parameters: [], result: "i32" },
  ncclGroupEnd: { parameters: [], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** ncclDataType_t values. */
export const NCCL_TYPE = { I32: 2, F16: 6, F32: 7, BF16: 9 } as const;
/** ncclRedOp_t values. */
export const NCCL_OP = { SUM: 0, AVG: 4 } as const;

/** The opened NCCL library. */
export type NcclLib = Deno.DynamicLibrary<typeof NCCL_SYMBOLS>["symbols"];

let cached: NcclLib | null = null;

/** Open NCCL once (throws a one-line TuneError when missing). */
export function nccl(): NcclLib {
  if (cached === null) cached = openLibrary(LIBNCCL, NCCL_SYMBOLS).lib.symbols;
  return cached;
}

/** Throw naming `call` and NCCL's message unless `status` is ncclSuccess (0). */
export function checkNccl(call: string, status: number): void {
  if (status === 0) return;
  const p = nccl().ncclGetErrorString(status);
  const text = p === null ? `ncclResult ${status}` : Deno.UnsafePointerView.getCString(p);
  throw new Error(`${call} failed: ${text} (ncclResult ${status})`);
}

/** A fresh unique id (rank 0 makes it and sends it to the others). */
export function ncclUniqueId(): Uint8Array {
  const id = new Uint8Array(NCCL_UNIQUE_ID_BYTES);
  checkNccl("ncclGetUniqueId", nccl().ncclGetUniqueId(id));
  return id;
}

/** Join the communicator of `nranks` ranks (blocks until all have joined). */
export function ncclCommInitRank(id: Uint8Array, nranks: number, rank: number): Deno.PointerValue {
  const slot = new BigUint64Array(1);
  checkNccl("ncclCommInitRank", nccl().ncclCommInitRank(slot, nranks, id, rank));
  return Deno.UnsafePointer.create(slot[0]);
}
