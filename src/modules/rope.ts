/**
 * Rotary position embedding tables (torchtune's RotaryPositionalEmbeddings and
 * Llama3ScaledRoPE), computed on the host in fp32 like PyTorch and uploaded once.
 * The rotation itself is the backend's `rope` op; this module owns the tables.
 */
import type { Backend, DeviceBuffer } from "../backend/ops.ts";

/** Llama 3.1-style rotary frequency scaling ("rope_type": "llama3" in Hugging Face configs). */
export interface RopeScaling {
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

/** Host rope tables: cos/sin (Tmax, HS/2), frequency i of position p at [p * HS/2 + i]. */
export interface RopeTables {
  cos: Float32Array;
  sin: Float32Array;
  maxSeqLen: number;
  headSize: number;
}

/**
 * The HS/2 inverse frequencies theta_i = 1 / base^(2i/HS), in fp32 as torch computes them,
 * then Llama 3.1 scaling when `scaling` is given (torchtune's `apply_scaling`).
 */
export function ropeFrequencies(
  headSize: number,
  base: number,
  scaling: RopeScaling | null,
): Float32Array {
  const half = headSize / 2;
  const f = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const exponent = Math.fround(Math.fround(2 * i) / headSize);
    f[i] = Math.fround(1 / Math.fround(Math.pow(base, exponent)));
  }
  if (!scaling) return f;
  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: oldLen } = scaling;
  const lowFreqWavelen = oldLen / lowFreqFactor;
  const highFreqWavelen = oldLen / highFreqFactor;
  for (let i = 0; i < half; i++) {
    const freq = f[i];
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highFreqWavelen) continue;
    if (wavelen > lowFreqWavelen) {
      f[i] = freq / factor;
    } else {
      const smooth = (oldLen / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
      f[i] = (1 - smooth) * (freq / factor) + smooth * freq;
    }
  }
  return f;
}

/** cos/sin tables for positions 0..maxSeqLen-1 (angles p * theta_i rounded to fp32). */
export function ropeTables(
  headSize: number,
  maxSeqLen: number,
  base: number,
  scaling: RopeScaling | null,
): RopeTables {
  const half = headSize / 2;
  const freqs = ropeFrequencies(headSize, base, scaling);
  const cos = new Float32Array(maxSeqLen * half); // (Tmax, HS/2)
  const sin = new Float32Array(maxSeqLen * half); // (Tmax, HS/2)
  for (let p = 0; p < maxSeqLen; p++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(p * freqs[i]);
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin, maxSeqLen, headSize };
}

/** Rope tables uploaded to a device. */
export interface DeviceRope {
  cos: DeviceBuffer; // (Tmax, RD/2)
  sin: DeviceBuffer; // (Tmax, RD/2)
  maxSeqLen: number;
  /** RD: the rotated leading dims of each head (the tables' head size; HS unless partial rotary). */
  dims: number;
}

/** Upload host tables to `backend` (two fp32 buffers). */
export function uploadRope(backend: Backend, t: RopeTables): DeviceRope {
  const cos = backend.alloc(t.cos.length, "f32");
  const sin = backend.alloc(t.sin.length, "f32");
  backend.upload(cos, t.cos);
  backend.upload(sin, t.sin);
  return { cos, sin, maxSeqLen: t.maxSeqLen, dims: t.headSize };
}
