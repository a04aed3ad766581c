/**
 * Activation offloading on CUDA (src/backend/offload.ts has the contract): a side stream
 * created CU_STREAM_NON_BLOCKING, so the legacy stream's synchronous uploads do not wait for
 * it; page-locked host memory from cuMemAllocHost, so cuMemcpy*Async really runs beside the
 * kernels; and events. Each group of copies is queued as torchtune's OffloadActivations
 * queues one tensor's: the side stream first waits for an event recorded on the compute
 * stream (the buffers hold what compute wrote, and compute is done reading what a copy back
 * overwrites), then the copies, then `done` is recorded on the side stream for compute to
 * wait on (cuStreamWaitEvent: the host never blocks).
 */
import {
  check,
  CU_EVENT_DISABLE_TIMING,
  CU_STREAM_NON_BLOCKING,
  handleOf,
} from "../../../ffi/cuda.ts";
import type { DeviceBuffer } from "../ops.ts";
import {
  type ActivationOffloader,
  type CopyEvent,
  HOST_ALIGN,
  type HostBuffer,
} from "../offload.ts";
import { cudaBuf } from "./buffer.ts";
import type { CudaContext } from "./context.ts";

/** Page-locked host memory and a byte view of it (the copies' host side). */
class PinnedBuffer implements HostBuffer {
  constructor(
    readonly ptr: Deno.PointerValue,
    readonly bytes: number,
    readonly view: Uint8Array,
  ) {}
}

/** An event of the side stream. */
class SideEvent implements CopyEvent {
  constructor(readonly id: number, readonly handle: Deno.PointerValue) {}
}

/** Copies between device buffers and page-locked host memory on a side stream. */
export class CudaOffloader implements ActivationOffloader {
  readonly #ctx: CudaContext;
  readonly #side: Deno.PointerValue;
  /** Recorded on the compute stream before each group of copies, waited for by the side stream. */
  readonly #point: Deno.PointerValue;
  readonly #hosts: PinnedBuffer[] = [];
  readonly #events: SideEvent[] = [];
  readonly #slot = new BigUint64Array(1);
  #released = false;
  hostBytes = 0;

  constructor(ctx: CudaContext) {
    this.#ctx = ctx;
    const lib = ctx.lib;
    check("cuStreamCreate", lib.cuStreamCreate(this.#slot, CU_STREAM_NON_BLOCKING));
    this.#side = handleOf(this.#slot);
    this.#point = this.#newEvent();
  }

  allocHost(bytes: number): HostBuffer {
    if (!Number.isInteger(bytes) || bytes <= 0) {
      throw new Error(`allocHost: ${bytes} is not a positive byte count`);
    }
    check(
      `cuMemAllocHost_v2(${bytes} bytes)`,
      this.#ctx.lib.cuMemAllocHost_v2(this.#slot, BigInt(bytes)),
    );
    const ptr = handleOf(this.#slot);
    const view = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(ptr!, bytes));
    // the copies must land in the page-locked memory itself, not in a copy of it
    if (Deno.UnsafePointer.value(Deno.UnsafePointer.of(view)) !== Deno.UnsafePointer.value(ptr)) {
      throw new Error("getArrayBuffer did not view the page-locked memory in place");
    }
    const h = new PinnedBuffer(ptr, bytes, view);
    this.#hosts.push(h);
    this.hostBytes += bytes;
    return h;
  }

  event(): CopyEvent {
    const e = new SideEvent(this.#events.length, this.#newEvent());
    this.#events.push(e);
    return e;
  }

  toHost(bufs: readonly DeviceBuffer[], host: HostBuffer, done: CopyEvent): void {
    const { cuMemcpyDtoHAsync_v2 } = this.#ctx.lib;
    this.#copies(bufs, host, done, (h, d, n) => {
      check("cuMemcpyDtoHAsync_v2", cuMemcpyDtoHAsync_v2(h, d, n, this.#side));
    });
  }

  toDevice(host: HostBuffer, bufs: readonly DeviceBuffer[], done: CopyEvent): void {
    const { cuMemcpyHtoDAsync_v2 } = this.#ctx.lib;
    this.#copies(bufs, host, done, (h, d, n) => {
      check("cuMemcpyHtoDAsync_v2", cuMemcpyHtoDAsync_v2(d, h, n, this.#side));
    });
  }

  waitFor(done: CopyEvent): void {
    const e = this.#own(done);
    check("cuStreamWaitEvent", this.#ctx.lib.cuStreamWaitEvent(this.#ctx.stream, e.handle, 0));
  }

  synchronize(): void {
    if (this.#released) throw new Error("the activation offloader was released");
    check("cuStreamSynchronize", this.#ctx.lib.cuStreamSynchronize(this.#side));
  }

  bytesOf(host: HostBuffer): Uint8Array {
    if (!(host instanceof PinnedBuffer) || !this.#hosts.includes(host)) {
      throw new Error("not a host buffer of this offloader");
    }
    return host.view;
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    const lib = this.#ctx.lib;
    check("cuStreamSynchronize", lib.cuStreamSynchronize(this.#side));
    for (const h of this.#hosts.splice(0)) check("cuMemFreeHost", lib.cuMemFreeHost(h.ptr));
    this.hostBytes = 0;
    for (const e of this.#events.splice(0)) lib.cuEventDestroy_v2(e.handle);
    lib.cuEventDestroy_v2(this.#point);
    check("cuStreamDestroy_v2", lib.cuStreamDestroy_v2(this.#side));
  }

  /** After the compute queued so far: one copy per buffer (packed in `host`), then `done`. */
  #copies(
    bufs: readonly DeviceBuffer[],
    host: HostBuffer,
    done: CopyEvent,
    copy: (h: Uint8Array, d: bigint, n: bigint) => void,
  ): void {
    if (this.#released) throw new Error("the activation offloader was released");
    const e = this.#own(done);
    if (!(host instanceof PinnedBuffer) || !this.#hosts.includes(host)) {
      throw new Error("not a host buffer of this offloader");
    }
    const lib = this.#ctx.lib;
    check("cuEventRecord", lib.cuEventRecord(this.#point, this.#ctx.stream));
    check("cuStreamWaitEvent", lib.cuStreamWaitEvent(this.#side, this.#point, 0));
    let at = 0;
    for (const b of bufs) {
      const c = cudaBuf(b, "offload");
      at = Math.ceil(at / HOST_ALIGN) * HOST_ALIGN;
      if (at + c.bytes > host.bytes) {
        throw new Error(
          `offload: ${c.bytes} bytes at ${at} overflow a host buffer of ${host.bytes}`,
        );
      }
      if (c.bytes > 0) copy(host.view.subarray(at, at + c.bytes), c.ptr, BigInt(c.bytes));
      at += c.bytes;
    }
    check("cuEventRecord", lib.cuEventRecord(e.handle, this.#side));
  }

  #own(done: CopyEvent): SideEvent {
    if (!(done instanceof SideEvent) || this.#events[done.id] !== done) {
      throw new Error("not an event of this offloader");
    }
    return done;
  }

  #newEvent(): Deno.PointerValue {
    check("cuEventCreate", this.#ctx.lib.cuEventCreate(this.#slot, CU_EVENT_DISABLE_TIMING));
    return handleOf(this.#slot);
  }
}
