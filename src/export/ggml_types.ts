/**
 * Tensor payload encodings of GGUF files: F32, F16, BF16 (round to nearest even, as tune's
 * safetensors writer) and Q8_0 as ggml defines it (ggml-quants.c, quantize_row_q8_0_ref):
 * blocks of 32 values along a row, each stored as an fp16 scale d = max|x| / 127 followed by 32
 * int8 q = round(x / d) (round half away from zero, C's roundf); a value decodes as q * d.
 */
import {
  decodeToF32,
  encodeFromF32,
  f16ToF32,
  f32ToF16,
  type FileDtype,
} from "../checkpoint/dtype.ts";
import type { GgmlTypeName } from "./gguf_file.ts";

/** Values per Q8_0 block. */
export const QK8_0 = 32;

/** Quantize fp32 values (length a multiple of 32) to Q8_0 blocks. */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  const nb = x.length / QK8_0;
  const out = new Uint8Array(nb * 34);
  const view = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    const base = b * QK8_0;
    let amax = 0;
    for (let j = 0; j < QK8_0; j++) amax = Math.max(amax, Math.abs(x[base + j]));
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    view.setUint16(b * 34, f32ToF16(d), true);
    for (let j = 0; j < QK8_0; j++) {
      const v = Math.fround(x[base + j] * id);
      const q = Math.sign(v) * Math.round(Math.abs(v)); // roundf: half away from zero
      view.setInt8(b * 34 + 2 + j, q);
    }
  }
  return out;
}

/** Q8_0 blocks back to fp32 (q * d, d the block's fp16 scale). */
export function dequantizeQ8_0(bytes: Uint8Array): Float32Array {
  const nb = bytes.length / 34;
  const out = new Float32Array(nb * QK8_0);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < nb; b++) {
    const d = f16ToF32(view.getUint16(b * 34, true));
    for (let j = 0; j < QK8_0; j++) {
      out[b * QK8_0 + j] = Math.fround(view.getInt8(b * 34 + 2 + j) * d);
    }
  }
  return out;
}

/** The file dtype of each float ggml type (Q8_0 is the one quantized type). */
const FLOAT_DTYPE: Record<Exclude<GgmlTypeName, "Q8_0">, FileDtype> = {
  F32: "f32",
  F16: "f16",
  BF16: "bf16",
};

/** fp32 values as the bytes of a ggml type. */
export function encodeGgml(data: Float32Array, type: GgmlTypeName): Uint8Array {
  return type === "Q8_0" ? quantizeQ8_0(data) : encodeFromF32(data, FLOAT_DTYPE[type]);
}

/** The bytes of a ggml type as fp32 values (exact for F32/F16/BF16). */
export function decodeGgml(bytes: Uint8Array, type: GgmlTypeName): Float32Array {
  return type === "Q8_0" ? dequantizeQ8_0(bytes) : decodeToF32(bytes, FLOAT_DTYPE[type]);
}
