/**
 * DoRA, weight-decomposed LoRA (Liu et al. 2024), as torchtune's DoRALinear has it:
 *   z = x @ W^T + s * dropout(x) @ A^T @ B^T            (the LoRA layer's output)
 *   norm = ||W + s * B A|| per output row, DETACHED (no gradient flows through it)
 *   y = (magnitude / norm) * z                           (per output column of y)
 * torchtune writes y = base + (g - 1) * base + g * s * lora with g = magnitude / norm, the
 * same value. The magnitude (out) is a trainable adapter initialised to ||W + s B A||.
 * Backward: dmagnitude += sum_n dy * z / norm, and the LoRA layer's backward sees g * dy;
 * z is recomputed from the saved input and LoRA hidden instead of being kept.
 * QDoRA: over an NF4 base W (torchtune's QDoRA) the row norms take W dequantized a tile of
 * rows at a time (never the whole weight), and z's base product is the NF4 product.
 */
import type { Backend, DeviceBuffer, Nf4Weight } from "../backend/ops.ts";
import { loraRowHost } from "./lora.ts";

/** The frozen base weight (out, in) under DoRA: dense, or NF4 (QDoRA). */
export type DoraBase = DeviceBuffer | Nf4Weight;

/** Rows of an NF4 base dequantized at a time for DoRA's norms (the tile scratch's height). */
export const QDORA_TILE_ROWS = 64;

function isNf4(w: DoraBase): w is Nf4Weight {
  return "codes" in w && "factors" in w;
}

/** The magnitude of one adapted layer, its gradient and the per-forward row norms. */
export interface DoraWeights {
  magnitude: DeviceBuffer; // (out)
  dmagnitude: DeviceBuffer | null; // (out)
  norm: DeviceBuffer; // (out) ||W + s B A|| of the last forward
  scale: DeviceBuffer; // (out) magnitude / norm of the last forward
}

/** Scratch shared by every DoRA layer of a model (sized for the largest one). */
export interface DoraScratch {
  ba: DeviceBuffer; // (maxOut, maxIn) fp32: B @ A
  z: DeviceBuffer; // (N, maxOut) the recomputed undecomposed output, then g * dy
  /** (QDORA_TILE_ROWS, maxIn) fp32: a tile of an NF4 base, dequantized; null without one. */
  wTile: DeviceBuffer | null;
}

/** The LoRA pieces DoRA reads: A (r, in), B (out, r), scale alpha / r. */
export interface DoraLoraView {
  readonly inDim: number;
  readonly outDim: number;
  readonly rank: number;
  readonly scale: number;
  readonly w: { a: DeviceBuffer; b: DeviceBuffer };
}

/** The magnitude part of one DoRA layer. */
export class Dora {
  constructor(
    readonly lora: DoraLoraView,
    readonly d: DoraWeights,
    readonly scratch: DoraScratch,
  ) {}

  /** norm(out) = ||W + s B A|| per row and scale = magnitude / norm, from the current weights. */
  computeNorms(be: Backend, w: DoraBase): void {
    const { inDim, outDim, rank } = this.lora;
    const ba = be.view(this.scratch.ba, 0, outDim * inDim); // (out, in)
    be.fill(ba, 0);
    // ba(out, in) += B(out, r) @ A(r, in)
    be.matmulBackward(
      ba,
      null,
      null,
      this.lora.w.b,
      this.lora.w.a,
      this.lora.w.a,
      outDim,
      inDim,
      rank,
    );
    if (!isNf4(w)) {
      be.doraNorm(
        this.d.scale,
        this.d.norm,
        w,
        ba,
        this.d.magnitude,
        this.lora.scale,
        outDim,
        inDim,
      );
      return;
    }
    // the norms are per row: tile by tile over the dequantized rows gives the same values
    const tile = this.scratch.wTile;
    if (!tile) throw new Error("DoRA over an NF4 base needs the wTile scratch");
    for (let r0 = 0; r0 < outDim; r0 += QDORA_TILE_ROWS) {
      const n = Math.min(QDORA_TILE_ROWS, outDim - r0);
      const wt = be.view(tile, 0, n * inDim); // (n, in)
      be.nf4Dequantize(wt, w, r0, n);
      const rows = (b: DeviceBuffer) => be.view(b, r0, n); // (n)
      be.doraNorm(
        rows(this.d.scale),
        rows(this.d.norm),
        wt,
        be.view(ba, r0 * inDim, n * inDim),
        rows(this.d.magnitude),
        this.lora.scale,
        n,
        inDim,
      );
    }
  }

  /** magnitude = ||W + s B A|| per row (torchtune's initialize_dora_magnitude). */
  initMagnitude(be: Backend, w: DoraBase): void {
    this.computeNorms(be, w);
    be.copy(this.d.magnitude, this.d.norm);
  }

  /** out(N, out) = z holding the LoRA layer's output -> (magnitude / norm) * z in place. */
  forward(be: Backend, out: DeviceBuffer, w: DoraBase, N: number): void {
    this.computeNorms(be, w);
    be.scaleColumns(out, out, this.d.scale, N, this.lora.outDim);
  }

  /**
   * dmagnitude += sum_n dout * z / norm; returns g * dout (N, out) in the shared scratch,
   * the gradient the LoRA layer's backward takes. z = inp @ W^T + b + hs @ B^T is recomputed
   * exactly as forward computed it (hs (N, r) is the saved scaled LoRA hidden).
   */
  backward(
    be: Backend,
    dout: DeviceBuffer,
    inp: DeviceBuffer,
    hs: DeviceBuffer,
    w: DoraBase,
    bias: DeviceBuffer | null,
    N: number,
  ): DeviceBuffer {
    const { inDim, outDim, rank } = this.lora;
    const z = be.view(this.scratch.z, 0, N * outDim); // (N, out)
    if (isNf4(w)) be.nf4MatmulForward(z, inp, w, bias, N);
    else be.matmulForward(z, inp, w, bias, N, inDim, outDim);
    be.matmulForward(z, hs, this.lora.w.b, null, N, rank, outDim, true);
    if (this.d.dmagnitude) {
      be.doraMagnitudeBackward(this.d.dmagnitude, dout, z, this.d.norm, N, outDim);
    }
    be.scaleColumns(z, dout, this.d.scale, N, outDim);
    return z;
  }
}

/**
 * Per-row norms of W + s B A on the host, as fp32 values accumulated in fp64 (the CPU
 * backend's doraNorm): W (out, in), A (r, in), B (out, r).
 */
export function doraNormsHost(
  w: Float32Array,
  a: Float32Array,
  b: Float32Array,
  outDim: number,
  inDim: number,
  rank: number,
  s: number,
): { adapted: Float32Array; norm: Float32Array } {
  const adapted = new Float32Array(outDim * inDim); // (out, in) W + s B A
  const norm = new Float32Array(outDim);
  const row = new Float32Array(inDim);
  const sf = Math.fround(s);
  for (let o = 0; o < outDim; o++) {
    loraRowHost(row, a, b, o, inDim, rank);
    let acc = 0;
    for (let i = 0; i < inDim; i++) {
      const v = Math.fround(w[o * inDim + i] + Math.fround(sf * row[i]));
      adapted[o * inDim + i] = v;
      acc += v * v;
    }
    norm[o] = Math.sqrt(acc);
  }
  return { adapted, norm };
}

/**
 * The merged DoRA weight on the host: W' = (magnitude / ||W + s B A||)[:, None] * (W + s B A),
 * with s = alpha / rank.
 */
export function mergeDoraHost(
  w: Float32Array,
  a: Float32Array,
  b: Float32Array,
  magnitude: Float32Array,
  outDim: number,
  inDim: number,
  rank: number,
  alpha: number,
): Float32Array {
  const { adapted, norm } = doraNormsHost(w, a, b, outDim, inDim, rank, alpha / rank);
  for (let o = 0; o < outDim; o++) {
    const g = Math.fround(magnitude[o] / norm[o]);
    for (let i = o * inDim, e = i + inDim; i < e; i++) adapted[i] *= g;
  }
  return adapted;
}
