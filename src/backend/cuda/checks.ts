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

/** The CudaBuffer behind `b`, holding at least n elements (errors name `what`). */
export function operand(b: DeviceBuffer, n: number, what: string): CudaBuffer {
  const c = cudaBuf(b, what);
  need(c, n, what);
  return c;
}

/** `b` is f32 or bf16, not i32. */
export function float(b: CudaBuffer, what: string): void {
  if (b.dtype === "i32") throw new Error(`${what}: expected a float buffer, got i32`);
}

/** An f32 or bf16 operand of at least n elements. */
export function floatOperand(b: DeviceBuffer, n: number, what: string): CudaBuffer {
  const c = operand(b, n, what);
  float(c, what);
  return c;
}

/** An f32 operand of at least n elements (a kernel reads it as float*). */
export function f32Operand(b: DeviceBuffer, n: number, what: string): CudaBuffer {
  const c = operand(b, n, what);
  if (c.dtype !== "f32") throw new Error(`${what}: expected f32, got ${c.dtype}`);
  return c;
}

/** An i32 buffer of at least n ids (rope positions, attention segments). */
export function segmentIds(b: DeviceBuffer, n: number, what: string): CudaBuffer {
  const c = cudaBuf(b, what);
  if (c.dtype !== "i32") throw new Error(`${what}: expected an i32 buffer, got ${c.dtype}`);
  need(c, n, what);
  return c;
}
