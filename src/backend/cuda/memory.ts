/**
 * Memory of the CUDA backend: alloc (zeroed, from the caching allocator), views, host
 * copies (bf16 encoded/decoded on the host), fill, device copies (a dtype change runs
 * cast_copy of kernels/elementwise.cu), free, sync and event timing. CPU twin: the
 * Float32Array/Int32Array handling of src/backend/cpu/backend.ts and cpu/buffer.ts.
 */
import { check, handleOf } from "../../../ffi/cuda.ts";
import { checkInto, type DeviceBuffer, type DType } from "../ops.ts";
import { decodeBf16, encodeBf16 } from "./bf16.ts";
import { cudaBuf, CudaBuffer, dtCode, ELEM_BYTES } from "./buffer.ts";
import { need } from "./checks.ts";
import type { CudaContext } from "./context.ts";

export function alloc(ctx: CudaContext, length: number, dtype: DType = "f32"): DeviceBuffer {
  if (!Number.isInteger(length) || length < 0) {
    throw new Error(`alloc: length ${length} is not a non-negative integer`);
  }
  const bytes = length * ELEM_BYTES[dtype];
  const { ptr, blockBytes } = ctx.alloc_.alloc(Math.max(bytes, 1));
  if (bytes > 0) {
    check("cuMemsetD8Async", ctx.lib.cuMemsetD8Async(ptr, 0, BigInt(bytes), ctx.stream));
  }
  ctx.liveBytes += bytes;
  return new CudaBuffer(ptr, length, dtype, blockBytes, true);
}

export function view(
  _ctx: CudaContext,
  b: DeviceBuffer,
  offset: number,
  length: number,
): DeviceBuffer {
  const c = cudaBuf(b, "view");
  if (offset < 0 || length < 0 || offset + length > c.length) {
    throw new Error(`view [${offset}, ${offset + length}) is outside a buffer of ${c.length}`);
  }
  const ptr = c.ptr + BigInt(offset * ELEM_BYTES[c.dtype]);
  return new CudaBuffer(ptr, length, c.dtype, 0, false);
}

export function upload(
  ctx: CudaContext,
  dst: DeviceBuffer,
  src: Float32Array | Int32Array,
  dstOffset = 0,
): void {
  const d = cudaBuf(dst, "upload");
  if (dstOffset < 0 || dstOffset + src.length > d.length) {
    throw new Error(`upload of ${src.length} at ${dstOffset} overflows a buffer of ${d.length}`);
  }
  if ((d.dtype === "i32") !== (src instanceof Int32Array)) {
    throw new Error(`upload: ${src.constructor.name} into a ${d.dtype} buffer`);
  }
  if (src.length === 0) return;
  const eb = ELEM_BYTES[d.dtype];
  const at = d.ptr + BigInt(dstOffset * eb);
  let bytes: Uint8Array;
  if (d.dtype === "bf16") {
    const h = new Uint16Array(src.length);
    encodeBf16(h, src);
    bytes = new Uint8Array(h.buffer);
  } else {
    bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
  }
  // Synchronous (the legacy stream waits for this blocking stream's queued work first).
  const t0 = ctx.profiler.active ? performance.now() : 0;
  check("cuMemcpyHtoD_v2", ctx.lib.cuMemcpyHtoD_v2(at, bytes, BigInt(bytes.byteLength)));
  if (ctx.profiler.active) {
    ctx.profiler.hostWait("upload (synchronous HtoD)", performance.now() - t0);
  }
}

export function download(
  ctx: CudaContext,
  src: DeviceBuffer,
  into?: Float32Array | Int32Array,
): Float32Array | Int32Array {
  const s = cudaBuf(src, "download");
  if (into !== undefined) checkInto(into, s.dtype === "i32", s.length);
  ctx.waitStream("download");
  if (s.dtype === "i32") {
    const out = (into as Int32Array | undefined) ?? new Int32Array(s.length);
    if (s.length > 0) ctx.dtoh(new Uint8Array(out.buffer, out.byteOffset, out.byteLength), s);
    return out;
  }
  const out = (into as Float32Array | undefined) ?? new Float32Array(s.length);
  if (s.length === 0) return out;
  if (s.dtype === "bf16") {
    const h = new Uint16Array(s.length);
    ctx.dtoh(new Uint8Array(h.buffer), s);
    decodeBf16(out, h);
  } else {
    ctx.dtoh(new Uint8Array(out.buffer, out.byteOffset, out.byteLength), s);
  }
  return out;
}

export function fill(ctx: CudaContext, b: DeviceBuffer, value: number): void {
  const c = cudaBuf(b, "fill");
  if (c.length === 0) return;
  if (c.dtype === "bf16") {
    need(c, c.length, "fill");
    ctx.runVec("fill", c.length, [c.ptr, 1, value, c.length]);
    return;
  }
  const bits = c.dtype === "i32" ? value | 0 : new Uint32Array(new Float32Array([value]).buffer)[0];
  const t = ctx.profiler.active ? ctx.profiler.before() : -1;
  check(
    "cuMemsetD32Async",
    ctx.lib.cuMemsetD32Async(c.ptr, bits >>> 0, BigInt(c.length), ctx.stream),
  );
  if (t >= 0) ctx.profiler.after(t, "memset (fill)", "memset");
}

export function copy(ctx: CudaContext, dst: DeviceBuffer, src: DeviceBuffer): void {
  const d = cudaBuf(dst, "copy"), s = cudaBuf(src, "copy");
  if (d.length !== s.length) throw new Error(`copy: lengths ${d.length} != ${s.length}`);
  if ((d.dtype === "i32") !== (s.dtype === "i32")) {
    throw new Error(`copy: ${s.dtype} into ${d.dtype}`);
  }
  if (d.length === 0) return;
  if (d.dtype === s.dtype) {
    const t = ctx.profiler.active ? ctx.profiler.before() : -1;
    check(
      "cuMemcpyDtoDAsync_v2",
      ctx.lib.cuMemcpyDtoDAsync_v2(d.ptr, s.ptr, BigInt(d.bytes), ctx.stream),
    );
    if (t >= 0) ctx.profiler.after(t, "memcpy DtoD (copy)", "memcpy");
  } else {
    need(d, d.length, "copy");
    ctx.runVec("cast_copy", d.length, [
      d.ptr,
      dtCode(d.dtype),
      s.ptr,
      dtCode(s.dtype),
      d.length,
    ]);
  }
}

export function free(ctx: CudaContext, b: DeviceBuffer): void {
  const c = cudaBuf(b, "free");
  if (!c.owned) return;
  c.owned = false; // a second free is a no-op
  ctx.liveBytes -= c.bytes;
  ctx.alloc_.release(c.ptr, c.blockBytes);
}

export function sync(ctx: CudaContext): void {
  ctx.waitStream("sync()");
}

export function bytesInUse(ctx: CudaContext): number {
  return ctx.liveBytes;
}

/** Bytes reserved from the driver (live plus cached blocks). */
export function bytesReserved(ctx: CudaContext): number {
  return ctx.alloc_.reservedBytes;
}

/** Milliseconds of GPU time `fn`'s queued work takes (events around it; synchronizes). */
export function timeMs(ctx: CudaContext, fn: () => void): number {
  const lib = ctx.lib;
  const slot = new BigUint64Array(1);
  check("cuEventCreate", lib.cuEventCreate(slot, 0));
  const start = handleOf(slot);
  check("cuEventCreate", lib.cuEventCreate(slot, 0));
  const end = handleOf(slot);
  try {
    check("cuEventRecord", lib.cuEventRecord(start, ctx.stream));
    fn();
    check("cuEventRecord", lib.cuEventRecord(end, ctx.stream));
    check("cuEventSynchronize", lib.cuEventSynchronize(end));
    const ms = new Float32Array(1);
    const elapsed = lib.cuEventElapsedTime_v2 ?? lib.cuEventElapsedTime;
    if (elapsed === null) throw new Error("the driver exports no cuEventElapsedTime");
    check("cuEventElapsedTime", elapsed(ms, start, end));
    return ms[0];
  } finally {
    lib.cuEventDestroy_v2(start);
    lib.cuEventDestroy_v2(end);
  }
}
