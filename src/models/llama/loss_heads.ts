/**
 * The head of a Llama model's training and eval steps: the output projection over row
 * chunks of the final hidden states (torchtune's num_output_chunks, so only (Nc, V) logits
 * exist at a time) and the loss heads a step can end in. A loss head turns a chunk of
 * logits into per-row losses and, in place, d(loss)/d(logits); `LlamaModel.trainStep` runs
 * the rest of the backward. Cross-entropy, distillation and preference weighting are the
 * three heads; a training method adds a head, not a model method.
 */
import { logitSoftcap, logitSoftcapBackward } from "./softcap.ts";
import type { Backend, DeviceBuffer } from "../../backend/ops.ts";
import type { Allocator } from "../../modules/activations.ts";
import type { Linear } from "../../modules/linear.ts";
import { mixSeed } from "../../params/random.ts";
import { TuneError } from "../../errors.ts";

/** Result of a loss evaluation: summed token losses and the number of counted tokens. */
export interface LossResult {
  /** Sum over non-ignored tokens of -log p(target). */
  lossSum: number;
  /** Number of targets that are not -100. */
  tokens: number;
}

/**
 * A preference loss's weights (B) for the sequences of a micro-batch, given their summed
 * token losses (B) from the same forward: the gradient is of sum_b w[b] * seqLoss[b].
 */
export type SequenceWeigher = (seqLoss: Float64Array) => Float64Array;

/** Knowledge-distillation targets of a micro-batch. */
export interface DistillTargets {
  /** (B*T, V) the teacher's logits for the same tokens (e.g. a teacher model's `forward`). */
  teacherLogits: DeviceBuffer;
  /** Weight r of the KD loss: the loss is (1 - r) class loss + r KD loss. */
  kdRatio: number;
}

/** Result of a distillation step: summed class and KD token losses. */
export interface DistillLossResult extends LossResult {
  /** Sum over non-ignored tokens of -sum_v softmax(teacher)_v log softmax(student)_v. */
  kdLossSum: number;
}

/** Result of a preference-weighted step. */
export interface WeightedLossResult {
  /** (B) summed token losses of each sequence: -log p(sequence's targets). */
  seqLoss: Float64Array;
  /** (B) the weights `weigh` chose. */
  weights: Float64Array;
  /** (B) sum of the logits over each sequence's counted positions (all V of each). */
  logitSums: Float64Array;
  /** (B) counted targets (not -100) of each sequence. */
  tokens: Int32Array;
}

/** Rows [r0, r0 + n) of a step's logits, handed to a loss head. */
export interface HeadRows {
  B: number;
  T: number;
  V: number;
  r0: number;
  n: number;
  /** (n, V) logits on entry; the head overwrites them with d(loss)/d(logits). */
  logits: DeviceBuffer;
  /** (n) per-row losses the head writes. */
  losses: DeviceBuffer;
  /** (n) i32 targets on the device, and their host copy (-100: ignored). */
  targets: DeviceBuffer;
  hostTargets: Int32Array;
  /** A second (N) f32 per-row buffer of the step (the KD losses), allocated on first use. */
  extraRows(): DeviceBuffer;
}

/** What a head's result is computed from, after every chunk ran. */
export interface HeadTotals {
  /** (N) per-row losses of the step. */
  losses: DeviceBuffer;
  /** The `extraRows()` buffer (N). */
  extraRows(): DeviceBuffer;
  /** Targets counted (not -100). */
  tokens: number;
}

/** How a training step turns logits into its loss and d(loss)/d(logits). */
export interface LossHead<R> {
  /** Refuse a model this head cannot run on (N rows of V, `chunkRows` logits at a time). */
  check(N: number, V: number, chunkRows: number): void;
  /** Loss and gradient of one chunk of rows. */
  rows(be: Backend, c: HeadRows): void;
  /** The step's result. */
  result(be: Backend, t: HeadTotals): R;
}

/**
 * Mean-style cross-entropy: the gradients of sum-of-token-losses * gradScale (pass
 * 1 / tokens of the whole optimizer step for torchtune's mean loss).
 */
export function crossEntropyHead(gradScale: number): LossHead<LossResult> {
  return {
    check() {},
    rows(be, c) {
      be.crossEntropy(c.losses, c.logits, c.logits, c.targets, c.n, c.V, gradScale, c.hostTargets);
    },
    result: (be, t) => ({ lossSum: be.sum(t.losses), tokens: t.tokens }),
  };
}

/**
 * Knowledge distillation: the gradients of ((1 - r) class loss + r KD loss) * gradScale,
 * where a token's KD loss is the cross-entropy of the student against softmax(teacher
 * logits) (torchtune's ForwardKLLoss before its mean).
 */
export function distillHead(gradScale: number, d: DistillTargets): LossHead<DistillLossResult> {
  return {
    check(N, V) {
      if (d.teacherLogits.length < N * V) {
        throw new TuneError(
          `teacher logits hold ${d.teacherLogits.length} values, not (${N}, ${V}); ` +
            `the teacher and student must share batch, sequence length and vocabulary`,
        );
      }
    },
    rows(be, c) {
      const kd = c.extraRows(); // (N)
      be.distillCrossEntropy(
        c.losses,
        c.r0 === 0 && c.n === kd.length ? kd : be.view(kd, c.r0, c.n), // (n)
        c.logits,
        c.logits,
        be.view(d.teacherLogits, c.r0 * c.V, c.n * c.V), // (n, V)
        c.targets,
        c.n,
        c.V,
        d.kdRatio,
        gradScale,
        c.hostTargets,
      );
    },
    result: (be, t) => ({
      lossSum: be.sum(t.losses),
      kdLossSum: be.sum(t.extraRows()),
      tokens: t.tokens,
    }),
  };
}

/**
 * Preference weighting (DPO): each sequence's summed loss gets a weight chosen after the
 * forward from every sequence's summed loss, w = weigh(seqLoss); the gradients are of
 * sum_b w[b] * seqLoss[b]. Needs all logits of the batch at once (logitChunks 1).
 */
export function preferenceHead(weigh: SequenceWeigher): LossHead<WeightedLossResult> {
  let out: WeightedLossResult | null = null;
  return {
    check(N, _V, chunkRows) {
      if (chunkRows < N) {
        throw new TuneError(
          "a preference loss needs all logits of a batch at once; build the model with logitChunks 1",
        );
      }
    },
    rows(be, c) {
      const logitSums = countedLogitSums(be, c); // before dlogits overwrite them
      be.crossEntropy(c.losses, c.logits, c.logits, c.targets, c.n, c.V, 1, c.hostTargets);
      const seqLoss = sequenceSums(be, c.losses, c.B, c.T);
      const weights = weigh(seqLoss);
      if (weights.length !== c.B || !weights.every(Number.isFinite)) {
        throw new Error(`sequence weights must be ${c.B} finite numbers, got [${weights}]`);
      }
      const rows = c.T * c.V;
      for (let b = 0; b < c.B; b++) {
        if (weights[b] !== 1) be.scale(be.view(c.logits, b * rows, rows), weights[b]);
      }
      const tokens = new Int32Array(c.B);
      const tg = c.hostTargets;
      for (let i = 0; i < tg.length; i++) if (tg[i] !== -100) tokens[Math.floor(i / c.T)]++;
      out = { seqLoss, weights, logitSums, tokens };
    },
    result: () => out!,
  };
}

/** (B) sums of the per-row losses (B*T) over each sequence's T rows, in float64. */
export function sequenceSums(
  be: Backend,
  losses: DeviceBuffer,
  B: number,
  T: number,
): Float64Array {
  const rows = be.download(losses) as Float32Array; // (N)
  const out = new Float64Array(B);
  for (let b = 0; b < B; b++) {
    let s = 0;
    for (let t = 0; t < T; t++) s += rows[b * T + t];
    out[b] = s;
  }
  return out;
}

/**
 * (B) sums of all logits (B*T, V) over each sequence's counted rows (target not -100):
 * TRL's logits/chosen metric. One reduction per run of consecutive counted rows.
 */
function countedLogitSums(be: Backend, c: HeadRows): Float64Array {
  const { B, T, V } = c;
  const out = new Float64Array(B);
  const tg = c.hostTargets; // (N)
  for (let b = 0; b < B; b++) {
    let t = 0;
    while (t < T) {
      if (tg[b * T + t] === -100) {
        t++;
        continue;
      }
      const start = t;
      while (t < T && tg[b * T + t] !== -100) t++;
      out[b] += be.sum(be.view(c.logits, (b * T + start) * V, (t - start) * V));
    }
  }
  return out;
}

/** Sizes of an output head. */
export interface OutputHeadDims {
  B: number;
  T: number;
  C: number;
  V: number;
  /** Decoder layers L (keys the head's dropout seed). */
  L: number;
  /** Rows Nc of logits computed at a time. */
  chunkRows: number;
  /** Final logit soft-cap c (Gemma 2): logits = c * tanh(logits / c). Absent: none. */
  finalSoftcap?: number;
}

/**
 * The output projection and per-row losses of a (B*T)-row step, chunk by chunk. Owns the
 * logits (Nc, V), the losses (N) and the head adapter's hidden (N, r).
 */
export class OutputHead {
  readonly logits: DeviceBuffer; // (Nc, V); dlogits overwrite it
  readonly losses: DeviceBuffer; // (N)
  readonly #hs: DeviceBuffer | null; // (N, r) LoRA hidden of the output projection
  #extra: DeviceBuffer | null = null; // (N) KD losses, allocated on first use
  readonly #capped: DeviceBuffer | null; // (Nc, V) soft-capped logits kept for backward

  constructor(
    readonly output: Linear,
    readonly d: OutputHeadDims,
    readonly al: Allocator,
    rank: number,
    act: "f32" | "bf16",
  ) {
    const N = d.B * d.T;
    this.logits = al.alloc("activations", d.chunkRows * d.V, act);
    this.losses = al.alloc("activations", N);
    this.#hs = output.lora ? al.alloc("activations", N * rank, act) : null;
    this.#capped = d.finalSoftcap ? al.alloc("activations", d.chunkRows * d.V, act) : null;
  }

  /** The (N) per-row buffer heads may use besides `losses`. */
  extraRows = (): DeviceBuffer => {
    this.#extra ??= this.al.alloc("activations", this.d.B * this.d.T);
    return this.#extra;
  };

  /**
   * Project every chunk of lnf (N, C) into the logits; with `targets` also each row's loss
   * (no gradients). Without targets the model must have one chunk (the logits stay).
   */
  eval(be: Backend, lnf: DeviceBuffer, targets: DeviceBuffer | null, host: Int32Array): void {
    const { B, T, V } = this.d;
    const N = B * T;
    for (let r0 = 0; r0 < N; r0 += this.d.chunkRows) {
      const n = Math.min(this.d.chunkRows, N - r0);
      const logits = this.#project(be, lnf, r0, n, null);
      if (!targets) continue;
      const whole = n === N;
      be.crossEntropy(
        whole ? this.losses : be.view(this.losses, r0, n), // (n)
        null,
        logits,
        whole ? targets : be.view(targets, r0, n), // (n)
        n,
        V,
        1,
        host.subarray(r0, r0 + n),
      );
    }
  }

  /**
   * Forward, loss head and backward of every chunk: dln (N, C), zeroed by the caller,
   * receives d(loss)/d(lnf); the head's parameter gradients accumulate.
   */
  train<R>(
    be: Backend,
    lnf: DeviceBuffer,
    dln: DeviceBuffer,
    seed: number | null,
    targets: DeviceBuffer,
    host: Int32Array,
    head: LossHead<R>,
  ): void {
    const { B, T, V, C } = this.d;
    const N = B * T;
    for (let r0 = 0; r0 < N; r0 += this.d.chunkRows) {
      const n = Math.min(this.d.chunkRows, N - r0);
      const whole = n === N;
      const hseed = this.#seed(seed, r0, whole);
      const logits = this.#project(be, lnf, r0, n, hseed);
      const capped = this.#capped === null ? null : be.view(this.#capped, 0, n * V);
      if (capped) be.copy(capped, logits);
      head.rows(be, {
        B,
        T,
        V,
        r0,
        n,
        logits,
        losses: whole ? this.losses : be.view(this.losses, r0, n), // (n)
        targets: whole ? targets : be.view(targets, r0, n), // (n)
        hostTargets: host.subarray(r0, r0 + n),
        extraRows: this.extraRows,
      });
      if (capped) logitSoftcapBackward(be, logits, capped, n * V, this.d.finalSoftcap!);
      const rowsIn = whole ? lnf : be.view(lnf, r0 * C, n * C); // (n, C)
      const drows = whole ? dln : be.view(dln, r0 * C, n * C); // (n, C)
      this.output.backward(be, drows, logits, rowsIn, n, this.#hsRows(be, r0, n), hseed);
    }
  }

  /** logits (n, V) of rows [r0, r0 + n) of lnf (N, C). */
  #project(
    be: Backend,
    lnf: DeviceBuffer,
    r0: number,
    n: number,
    hseed: number | null,
  ): DeviceBuffer {
    const { B, T, V, C } = this.d;
    const rows = r0 === 0 && n === B * T ? lnf : be.view(lnf, r0 * C, n * C); // (n, C)
    const logits = n * V === this.logits.length ? this.logits : be.view(this.logits, 0, n * V);
    this.output.forward(be, logits, rows, n, this.#hsRows(be, r0, n), hseed);
    if (this.d.finalSoftcap) logitSoftcap(be, logits, n * V, this.d.finalSoftcap);
    return logits;
  }

  #hsRows(be: Backend, r0: number, n: number): DeviceBuffer | null {
    if (!this.#hs || (r0 === 0 && n === this.d.B * this.d.T)) return this.#hs;
    const r = this.#hs.length / (this.d.B * this.d.T);
    return be.view(this.#hs, r0 * r, n * r); // (n, r)
  }

  /** One chunk keeps the unchunked seed, so masks do not depend on chunking when it is off. */
  #seed(seed: number | null, r0: number, whole: boolean): number | null {
    if (seed === null) return null;
    const h = mixSeed(seed, this.d.L, 0x4ead);
    return whole ? h : mixSeed(h, r0);
  }
}
