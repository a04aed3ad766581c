/**
 * A caching allocator over cuMemAlloc: sizes are rounded up to size classes (quarter
 * powers of two above 4 KiB), freed blocks go to a free list per class and are reused.
 * Everything runs on one stream, so a block freed after queued work may be handed out
 * at once: later work on the same stream runs after the earlier work that used it.
 * When cuMemAlloc runs out of memory the cached blocks are released and it retries.
 */
import { check, cuda, CudaError } from "../../../ffi/cuda.ts";

const CUDA_ERROR_OUT_OF_MEMORY = 2;

/** The size class of a request of `bytes` (at least 512 bytes, 256-byte aligned). */
export function sizeClass(bytes: number): number {
  if (bytes <= 4096) return Math.max(512, Math.ceil(bytes / 512) * 512);
  const step = 2 ** (Math.floor(Math.log2(bytes)) - 2);
  return Math.ceil(bytes / step) * step;
}

/** Cached device memory blocks by size class. */
export class CachingAllocator {
  private readonly free = new Map<number, bigint[]>();
  private readonly slot = new BigUint64Array(1);
  /** Bytes held from the driver (live plus cached). */
  reservedBytes = 0;

  /** A block of at least `bytes` (its class size is `sizeClass(bytes)`). */
  alloc(bytes: number): { ptr: bigint; blockBytes: number } {
    const blockBytes = sizeClass(bytes);
    const list = this.free.get(blockBytes);
    if (list && list.length > 0) return { ptr: list.pop()!, blockBytes };
    const lib = cuda();
    let status = lib.cuMemAlloc_v2(this.slot, BigInt(blockBytes));
    if (status === CUDA_ERROR_OUT_OF_MEMORY) {
      this.releaseCached();
      status = lib.cuMemAlloc_v2(this.slot, BigInt(blockBytes));
    }
    if (status !== 0) {
      throw new CudaError(
        `cuMemAlloc_v2(${blockBytes} bytes)`,
        status,
        `${this.reservedBytes} bytes already reserved by tune`,
      );
    }
    this.reservedBytes += blockBytes;
    return { ptr: this.slot[0], blockBytes };
  }

  /** Return a block to its free list. */
  release(ptr: bigint, blockBytes: number): void {
    let list = this.free.get(blockBytes);
    if (!list) {
      list = [];
      this.free.set(blockBytes, list);
    }
    list.push(ptr);
  }

  /** Give every cached (free) block back to the driver. Call when the stream is idle. */
  releaseCached(): void {
    const lib = cuda();
    check("cuCtxSynchronize", lib.cuCtxSynchronize());
    for (const [size, list] of this.free) {
      for (const p of list) {
        check("cuMemFree_v2", lib.cuMemFree_v2(p));
        this.reservedBytes -= size;
      }
    }
    this.free.clear();
  }
}
