/**
 * LoRA adapter on a linear layer (torchtune's LoRALinear, PEFT's lora.Linear):
 *   out += (alpha / r) * dropout(x) @ A^T @ B^T,  A (r, in), B (out, r).
 * The frozen base product is the Linear's; this module only adds the low-rank path.
 */
import type { Backend, DeviceBuffer } from "../backend/ops.ts";
import { SeededRandom } from "../params/random.ts";
import type { Dora } from "./dora.ts";

/** Adapter weights and (for training) their gradients. */
export interface LoraWeights {
  a: DeviceBuffer; // (r, in)
  b: DeviceBuffer; // (out, r)
  da: DeviceBuffer | null; // (r, in)
  db: DeviceBuffer | null; // (out, r)
}

/** Scratch shared by every adapter of a model (sized for the largest one). */
export interface LoraScratch {
  xd: DeviceBuffer; // (N, maxIn)  dropped input, then the mask again in backward
  dxd: DeviceBuffer; // (N, maxIn)  gradient of the dropped input
  dh: DeviceBuffer; // (N, maxR)   gradient of the low-rank hidden
}

/** The low-rank path of one adapted linear layer. */
export class Lora {
  /** alpha / rank. */
  readonly scale: number;
  /** False skips the low-rank path (the frozen base alone, e.g. DPO's reference model). */
  enabled = true;
  /** The DoRA magnitude of this adapter (use_dora), or null for plain LoRA. */
  dora: Dora | null = null;

  constructor(
    readonly inDim: number,
    readonly outDim: number,
    readonly rank: number,
    alpha: number,
    readonly dropout: number,
    readonly w: LoraWeights,
    readonly scratch: LoraScratch,
  ) {
    this.scale = alpha / rank;
  }

  /**
   * out(N, out) += scale * dropout(inp) @ A^T @ B^T; hs(N, r) = scale * dropout(inp) @ A^T is
   * saved for backward. Dropout applies only when `seed` is not null (training).
   */
  forward(
    be: Backend,
    out: DeviceBuffer,
    hs: DeviceBuffer,
    inp: DeviceBuffer,
    N: number,
    seed: number | null,
  ): void {
    const x = this.#dropped(be, inp, N, seed);
    be.matmulForward(hs, x, this.w.a, null, N, this.inDim, this.rank);
    be.scale(hs, this.scale);
    be.matmulForward(out, hs, this.w.b, null, N, this.rank, this.outDim, true);
  }

  /** Backward of forward: dA, dB accumulate; dinp(N, in) accumulates when given. */
  backward(
    be: Backend,
    dinp: DeviceBuffer | null,
    dout: DeviceBuffer,
    hs: DeviceBuffer,
    inp: DeviceBuffer,
    N: number,
    seed: number | null,
  ): void {
    const { inDim, rank, outDim } = this;
    const dh = be.view(this.scratch.dh, 0, N * rank); // (N, r)
    be.fill(dh, 0);
    // dB += dout^T @ hs; dh = dout @ B
    be.matmulBackward(dh, this.w.db, null, dout, hs, this.w.b, N, rank, outDim);
    be.scale(dh, this.scale);
    const x = this.#dropped(be, inp, N, seed);
    if (this.w.da) be.matmulBackward(null, this.w.da, null, dh, x, this.w.a, N, inDim, rank);
    if (!dinp) return;
    if (seed === null || this.dropout === 0) {
      be.matmulBackward(dinp, null, null, dh, x, this.w.a, N, inDim, rank);
      return;
    }
    const dxd = be.view(this.scratch.dxd, 0, N * inDim); // (N, in)
    be.fill(dxd, 0);
    be.matmulBackward(dxd, null, null, dh, x, this.w.a, N, inDim, rank);
    const mask = be.view(this.scratch.xd, 0, N * inDim); // (N, in)
    be.dropoutMask(mask, this.dropout, seed);
    be.mul(dxd, dxd, mask);
    be.add(dinp, dinp, dxd);
  }

  /** inp itself, or inp * mask in the shared scratch when dropout is active. */
  #dropped(be: Backend, inp: DeviceBuffer, N: number, seed: number | null): DeviceBuffer {
    if (seed === null || this.dropout === 0) return inp;
    const xd = be.view(this.scratch.xd, 0, N * this.inDim); // (N, in)
    be.dropoutMask(xd, this.dropout, seed);
    be.mul(xd, xd, inp);
    return xd;
  }
}

/**
 * Host initial values like torchtune/PEFT: A ~ kaiming_uniform(a=sqrt(5)), i.e.
 * U(-1/sqrt(in), 1/sqrt(in)); B = 0, so an untrained adapter leaves the model unchanged.
 */
export function initLoraHost(
  rank: number,
  inDim: number,
  outDim: number,
  rng: SeededRandom,
): { a: Float32Array; b: Float32Array } {
  const bound = 1 / Math.sqrt(inDim);
  return {
    a: rng.fillUniform(new Float32Array(rank * inDim), -bound, bound),
    b: new Float32Array(outDim * rank),
  };
}

/**
 * Row `o` of B(out, r) @ A(r, in) into `row` (in), on the host; `row`'s type sets the
 * precision the sums are kept in.
 */
export function loraRowHost(
  row: Float32Array | Float64Array,
  a: Float32Array,
  b: Float32Array,
  o: number,
  inDim: number,
  rank: number,
): void {
  row.fill(0);
  for (let k = 0; k < rank; k++) {
    const bk = b[o * rank + k];
    if (bk === 0) continue;
    const ak = k * inDim;
    for (let i = 0; i < inDim; i++) row[i] += bk * a[ak + i];
  }
}

/**
 * W(out, in) + (alpha / r) * B(out, r) @ A(r, in), on the host (merging for export), into a new
 * array or into `out` (which may be `w` itself: merged in place).
 */
export function mergeLoraHost(
  w: Float32Array,
  a: Float32Array,
  b: Float32Array,
  outDim: number,
  inDim: number,
  rank: number,
  alpha: number,
  out?: Float32Array,
): Float32Array {
  const s = alpha / rank;
  const merged = out ?? new Float32Array(w);
  if (merged !== w) merged.set(w);
  const row = new Float64Array(inDim);
  for (let o = 0; o < outDim; o++) {
    loraRowHost(row, a, b, o, inDim, rank);
    for (let i = 0; i < inDim; i++) merged[o * inDim + i] += s * row[i];
  }
  return merged;
}
