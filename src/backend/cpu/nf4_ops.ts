/**
 * The CPU backend's NF4 ops over DeviceBuffers (checks and views; the work is in nf4.ts).
 */
import type { DeviceBuffer, Nf4Weight } from "../ops.ts";
import { CpuBuffer } from "./buffer.ts";
import type { Gemm } from "./gemm.ts";
import {
  dequantizeNf4,
  type Nf4HostView,
  nf4MatmulBackwardCpu,
  nf4MatmulForwardCpu,
} from "./nf4.ts";
import type { Scratch } from "./scratch.ts";

/** Scratch slot of the dequantized tile (gemm.ts owns 0-1, backend.ts 2-3). */
const SLOT_NF4_TILE = 4;

function cpu(b: DeviceBuffer, what: string): CpuBuffer {
  if (!(b instanceof CpuBuffer)) throw new Error(`${what}: buffer was not made by the CPU backend`);
  return b;
}

function floats(b: DeviceBuffer, need: number, what: string): Float32Array {
  const c = cpu(b, what);
  if (c.dtype === "i32") throw new Error(`${what}: expected a float buffer, got i32`);
  if (c.data.length < need) {
    throw new Error(`${what}: buffer has ${c.data.length} elements, needs ${need}`);
  }
  return c.data as Float32Array;
}

function bytes(b: DeviceBuffer, need: number, what: string): Uint8Array {
  const c = cpu(b, what);
  if (c.dtype !== "i32") throw new Error(`${what}: expected an i32 buffer, got ${c.dtype}`);
  const d = c.data;
  if (d.byteLength < need) {
    throw new Error(`${what}: buffer has ${d.byteLength} bytes, needs ${need}`);
  }
  return new Uint8Array(d.buffer, d.byteOffset, need);
}

/** Host views of an NF4 weight's buffers, checked against its shape. */
export function nf4View(w: Nf4Weight): Nf4HostView {
  const n = w.rows * w.cols;
  if (n % (64 * 256) !== 0) {
    throw new Error(`NF4 weight of ${n} elements is not a multiple of 16384`);
  }
  const s = bytes(w.scalers, n / 64, "nf4 scalers");
  return {
    codes: bytes(w.codes, n / 2, "nf4 codes"),
    scalers: new Int8Array(s.buffer, s.byteOffset, s.length),
    factors: floats(w.factors, n / 16384, "nf4 factors"),
    mean: w.mean,
    dtype: w.dtype,
  };
}

/** out(rows, K) = rows [row0, row0 + rows) of W, dequantized. */
export function nf4Dequantize(out: DeviceBuffer, w: Nf4Weight, row0: number, rows: number): void {
  if (row0 < 0 || rows < 0 || row0 + rows > w.rows) {
    throw new Error(`nf4Dequantize: rows [${row0}, ${row0 + rows}) outside 0..${w.rows}`);
  }
  const o = floats(out, rows * w.cols, "nf4Dequantize out");
  dequantizeNf4(o, nf4View(w), row0 * w.cols, rows * w.cols);
}

/** out(M, N) (+)= inp(M, K) @ W^T + bias. */
export function nf4MatmulForward(
  gemm: Gemm,
  scratch: Scratch,
  out: DeviceBuffer,
  inp: DeviceBuffer,
  w: Nf4Weight,
  bias: DeviceBuffer | null,
  M: number,
  accumulate: boolean,
): void {
  const N = w.rows, K = w.cols;
  const o = floats(out, M * N, "nf4 matmul out"); // (M, N)
  const x = floats(inp, M * K, "nf4 matmul inp"); // (M, K)
  const b = bias === null ? null : floats(bias, N, "nf4 matmul bias"); // (N)
  nf4MatmulForwardCpu(gemm, scratch, SLOT_NF4_TILE, o, x, nf4View(w), b, M, N, K, accumulate);
}

/** dinp(M, K) += dout(M, N) @ W. */
export function nf4MatmulBackward(
  gemm: Gemm,
  scratch: Scratch,
  dinp: DeviceBuffer,
  dout: DeviceBuffer,
  w: Nf4Weight,
  M: number,
): void {
  const N = w.rows, K = w.cols;
  const dx = floats(dinp, M * K, "nf4 matmul dinp"); // (M, K)
  const dy = floats(dout, M * N, "nf4 matmul dout"); // (M, N)
  nf4MatmulBackwardCpu(gemm, scratch, SLOT_NF4_TILE, dx, dy, nf4View(w), M, N, K);
}
