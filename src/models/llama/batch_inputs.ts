/**
 * The device inputs of a model's (B, T) training/eval batch: token ids, targets and the
 * optional packing (segment ids and rope positions), checked against the vocabulary and the
 * rope table before upload. Host copies stay for the backend's id checks.
 */
import type { Backend, DeviceBuffer } from "../../backend/ops.ts";
import type { Allocator } from "../../modules/activations.ts";
import type { Packing } from "../../modules/attention.ts";
import { TuneError } from "../../errors.ts";

/**
 * Packed samples in a batch (torchtune's PackedDataset): each optional, (B, T) row-major.
 * Omitted: plain causal attention and positions 0..T-1 (bitwise the unpacked model).
 */
export interface BatchOptions {
  /** Segment id of every token: a token attends only to earlier tokens of its own segment. */
  segments?: Int32Array | null;
  /** Rope position of every token (restarting at 0 in each sample; torchtune's input_pos). */
  positions?: Int32Array | null;
}

/** One (B, T) batch of a training or eval step: ids, labels (-100: ignored) and packing. */
export interface TrainBatch extends BatchOptions {
  /** (B*T) token ids. */
  tokens: Int32Array;
  /** (B*T) target ids, -100 where no loss is counted. */
  targets: Int32Array;
}

/** Token, target and packing buffers of N = B*T rows. */
export class BatchInputs {
  readonly tokens: DeviceBuffer; // (N) i32
  readonly targets: DeviceBuffer; // (N) i32
  /** Host copies of the last uploaded tokens and targets (N). */
  hostTokens = new Int32Array(0);
  hostTargets = new Int32Array(0);
  /** Whether the last upload had targets. */
  hasTargets = false;
  #segIds: DeviceBuffer | null = null; // (N) i32, allocated on the first packed batch
  #posIds: DeviceBuffer | null = null; // (N) i32, allocated on the first packed batch

  constructor(
    readonly be: Backend,
    al: Allocator,
    readonly B: number,
    readonly T: number,
    readonly V: number,
  ) {
    this.tokens = al.alloc("activations", B * T, "i32");
    this.targets = al.alloc("activations", B * T, "i32");
  }

  /** Upload tokens (N) and targets (N, or null); returns the number of counted targets. */
  upload(tokens: Int32Array, targets: Int32Array | null): number {
    const N = this.B * this.T;
    const V = this.V;
    if (tokens.length !== N) {
      throw new Error(
        `model built for batch ${this.B} x seq_len ${this.T} got ${tokens.length} tokens`,
      );
    }
    for (const t of tokens) {
      if (!(t >= 0 && t < V)) {
        throw new TuneError(
          `token id ${t} is outside the vocabulary (size ${V}); check the tokenizer matches the model`,
        );
      }
    }
    this.be.upload(this.tokens, tokens);
    this.hostTokens = tokens.slice();
    this.hasTargets = targets !== null;
    if (!targets) return 0;
    if (targets.length !== N) throw new Error(`expected ${N} targets, got ${targets.length}`);
    let count = 0;
    for (const t of targets) {
      if (t === -100) continue;
      if (!(t >= 0 && t < V)) {
        throw new TuneError(
          `label ${t} is outside the vocabulary (size ${V}); check the tokenizer matches the model`,
        );
      }
      count++;
    }
    this.be.upload(this.targets, targets);
    this.hostTargets = targets.slice();
    return count;
  }

  /** Upload a batch's packing (null when it has none); positions must be below `ropeLen`. */
  packing(batch: BatchOptions, ropeLen: number): Packing | null {
    const N = this.B * this.T;
    const { segments = null, positions = null } = batch;
    for (const [what, a] of [["segments", segments], ["positions", positions]] as const) {
      if (a !== null && a.length !== N) {
        throw new Error(`model built for ${N} tokens per batch got ${a.length} ${what}`);
      }
    }
    if (positions !== null) {
      for (const p of positions) {
        if (!(p >= 0 && p < ropeLen)) {
          throw new TuneError(
            `packed position ${p} is outside 0..${ropeLen - 1}; check the dataset's input_pos`,
          );
        }
      }
    }
    if (segments !== null) {
      this.#segIds ??= this.be.alloc(N, "i32");
      this.be.upload(this.#segIds, segments);
    }
    if (positions !== null) {
      this.#posIds ??= this.be.alloc(N, "i32");
      this.be.upload(this.#posIds, positions);
    }
    return segments === null && positions === null ? null : {
      segments: segments === null ? null : this.#segIds,
      positions: positions === null ? null : this.#posIds,
    };
  }

  /** Free the packing buffers (the rest belongs to the model's allocator). */
  free(): void {
    if (this.#segIds) this.be.free(this.#segIds);
    if (this.#posIds) this.be.free(this.#posIds);
  }
}
