/** Device buffers of the CUDA backend. */
import type { DeviceBuffer, DType } from "../ops.ts";

/** Bytes per element of each dtype. */
export const ELEM_BYTES: Readonly<Record<DType, number>> = { f32: 4, bf16: 2, i32: 4 };

/** Dtype code the kernels take beside each buffer: 0 = f32 (and i32), 1 = bf16. */
export function dtCode(d: DType): number {
  return d === "bf16" ? 1 : 0;
}

/** Kernel arguments of buffers that carry a dtype code: ptr, dtCode(dtype) of each in turn. */
export function ptrDt(...bufs: CudaBuffer[]): (number | bigint)[] {
  const args: (number | bigint)[] = [];
  for (const b of bufs) args.push(b.ptr, dtCode(b.dtype));
  return args;
}

/** A region of GPU memory: `ptr` is the CUdeviceptr of element 0. */
export class CudaBuffer implements DeviceBuffer {
  constructor(
    readonly ptr: bigint,
    readonly length: number,
    readonly dtype: DType,
    /** Bytes of the allocation behind an owned buffer (its size class); 0 for views. */
    readonly blockBytes: number,
    /** True for buffers made by alloc (and not yet freed). */
    public owned: boolean,
  ) {}

  /** Size of the elements in bytes. */
  get bytes(): number {
    return this.length * ELEM_BYTES[this.dtype];
  }
}

/** The CudaBuffer behind `b`, or an error naming `what` for a foreign buffer. */
export function cudaBuf(b: DeviceBuffer, what: string): CudaBuffer {
  if (!(b instanceof CudaBuffer)) throw new Error(`${what}: not a CUDA buffer`);
  return b;
}
