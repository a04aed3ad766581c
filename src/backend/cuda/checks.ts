/** Operand checks shared by the CUDA layer files: the one-line errors every launcher gives. */
import type { DeviceBuffer } from "../ops.ts";
import { cudaBuf, type CudaBuffer } from "./buffer.ts";

/** Largest element count a kernel's 32-bit index takes. */
export const INT_MAX = 2147483647;

/** `b` holds at least n elements, and n fits the kernels' 32-bit indices. */
export function need(b: CudaBuffer, n: number, what: string): void {
  if (b.length < n) throw new Error(`${what}: buffer has ${b.length} elements, needs ${n}`);
  if (n > INT_MAX) throw new Error(`${what}: ${n} elements exceed the 2^31 kernel limit`);
}

/** `b` is f32 or bf16, not i32. */
export function float(b: CudaBuffer, what: string): void {
  if (b.dtype === "i32") throw new Error(`${what}: expected a float buffer, got i32`);
}

/** An i32 buffer of at least n ids (rope positions, attention segments). */
export function segmentIds(b: DeviceBuffer, n: number, what: string): CudaBuffer {
  const c = cudaBuf(b, what);
  if (c.dtype !== "i32") throw new Error(`${what}: expected an i32 buffer, got ${c.dtype}`);
  need(c, n, what);
  return c;
}
