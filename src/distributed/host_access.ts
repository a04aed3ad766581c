/** How the CPU collectives reach the elements of a backend's buffers. */
import type { Backend, DeviceBuffer } from "../backend/ops.ts";

/** Host-side access to device buffers, used by the collectives that run over TCP. */
export interface HostAccess {
  /**
   * The elements of `buf` on the host: f32 (bf16 widened) or i32. May be a live view of
   * the buffer's memory (then `write` of that same array is a no-op) or a copy.
   */
  read(buf: DeviceBuffer): Float32Array | Int32Array;
  /** Store `data` (same length and element kind as `read` gives) into `buf`. */
  write(buf: DeviceBuffer, data: Float32Array | Int32Array): void;
}

/**
 * Access through the op interface's `download`/`upload`: works for every backend (one
 * host copy each way). Pass a function when the backend is built after its collectives.
 */
export function backendHostAccess(
  backend: Pick<Backend, "download" | "upload"> | (() => Pick<Backend, "download" | "upload">),
): HostAccess {
  const get = typeof backend === "function" ? backend : () => backend;
  return {
    read: (buf) => get().download(buf),
    write: (buf, data) => get().upload(buf, data),
  };
}

/**
 * Zero-copy access for a backend whose buffers hold a typed array (the CPU backend's
 * `CpuBuffer.data`): `view(buf)` returns that array; the collectives then work in place.
 */
export function viewHostAccess(
  view: (buf: DeviceBuffer) => Float32Array | Int32Array,
): HostAccess {
  return {
    read: view,
    write: (buf, data) => {
      const dst = view(buf);
      if (dst !== data) dst.set(data);
    },
  };
}
