/**
 * Activation offloading, an optional capability of a backend (torchtune's
 * OffloadActivations): copies of device buffers into page-locked host memory and back, queued
 * on a side stream so they overlap the compute stream, with events so that neither stream
 * touches a buffer before the other is done with it. The CUDA backend has it
 * (cuda/offload.ts); the CPU backend has none, its activations already live in host memory.
 *
 * Ordering contract: `toHost` and `toDevice` start after every op queued on the compute
 * stream before the call (so the buffers hold what those ops wrote, and those ops are done
 * reading what `toDevice` overwrites); compute ops queued after `waitFor(done)` start after
 * the copies that last recorded `done`. The host copies of one offloader are made and read
 * back in the order queued.
 */
import type { Backend, DeviceBuffer } from "./ops.ts";

/** Page-locked host memory holding copies of device buffers. */
export interface HostBuffer {
  readonly bytes: number;
}

/** The point a group of queued copies completes at (an event); recorded again on reuse. */
export interface CopyEvent {
  readonly id: number;
}

/** Copies between device buffers and page-locked host memory on a side stream. */
export interface ActivationOffloader {
  /** Page-locked host memory of `bytes` bytes. */
  allocHost(bytes: number): HostBuffer;
  /** An event to mark the end of queued copies with. */
  event(): CopyEvent;
  /**
   * Queue copies of `bufs` into `host`, packed back to back from byte 0 (each at a multiple
   * of HOST_ALIGN bytes, see `packedBytes`), after the compute queued so far; `done` marks
   * their end.
   * The buffers must not be written before a `waitFor(done)`.
   */
  toHost(bufs: readonly DeviceBuffer[], host: HostBuffer, done: CopyEvent): void;
  /** Queue the copies back from `host` into `bufs` (packed as `toHost` packs them). */
  toDevice(host: HostBuffer, bufs: readonly DeviceBuffer[], done: CopyEvent): void;
  /** Compute queued from now on starts after the copies `done` marks. */
  waitFor(done: CopyEvent): void;
  /** Wait (on the host) until every copy queued so far has landed. */
  synchronize(): void;
  /**
   * The bytes of `host`, to read or write in place; call `synchronize()` first, since queued
   * copies may still be reading or writing them.
   */
  bytesOf(host: HostBuffer): Uint8Array;
  /** Bytes of page-locked host memory held. */
  readonly hostBytes: number;
  /** Wait for the side stream, then free the host memory, the events and the stream. */
  release(): void;
}

/** Alignment of each buffer's copy in a host buffer (the copies need none; 16 keeps them vector-aligned). */
export const HOST_ALIGN = 16;

/** Bytes a host buffer needs for the copies of buffers of `sizes` bytes (see toHost). */
export function packedBytes(sizes: readonly number[]): number {
  return sizes.reduce((at, n) => Math.ceil(at / HOST_ALIGN) * HOST_ALIGN + n, 0);
}

/** A backend that can offload (has an `activationOffloader` method). */
export interface OffloadingBackend extends Backend {
  /** A new offloader: its own side stream, events and host memory. */
  activationOffloader(): ActivationOffloader;
}

/** Whether `be` can offload (the CUDA backend; not the CPU, whose memory is host memory). */
export function canOffload(be: Backend): be is OffloadingBackend {
  return typeof (be as Partial<OffloadingBackend>).activationOffloader === "function";
}

/** `be`'s activation offloader, or null where the backend has none (the CPU). */
export function activationOffloader(be: Backend): ActivationOffloader | null {
  return canOffload(be) ? be.activationOffloader() : null;
}
