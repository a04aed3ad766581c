/**
 * Deterministic shuffling and batching that can resume exactly.
 *
 * The order of epoch e is a pure function of (seed, epoch): a Fisher-Yates shuffle driven
 * by xoshiro128** seeded through SplitMix32 from the seed's two 32-bit halves and the epoch.
 * Nothing is carried between epochs, so a run resumed at (epoch, step) yields bitwise the
 * same batches as the uninterrupted run. Across ranks it follows torch's
 * DistributedSampler: the epoch's order is padded (by repeating its head) to a multiple
 * of worldSize and rank r takes positions r, r + W, r + 2W, ...; each rank then cuts its
 * share into batches, dropping the incomplete last batch (torchtune's drop_last=True) unless
 * `dropLast: false` (e.g. for evaluation, with `shuffle: false`).
 */
import { type Batch, type CollateOptions, collatePadded } from "./collate.ts";
import type { Sample } from "./types.ts";

/** A uint32 generator. */
export type Rng = () => number;

function splitmix32(seed: number): Rng {
  let a = seed | 0;
  return () => {
    a = (a + 0x9e3779b9) | 0;
    let t = a ^ (a >>> 16);
    t = Math.imul(t, 0x21f0aaad);
    t ^= t >>> 15;
    t = Math.imul(t, 0x735a2d97);
    return (t ^ (t >>> 15)) >>> 0;
  };
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * xoshiro128** seeded from integers (each folded to two 32-bit words), e.g. (seed, epoch).
 * Integers up to 2^53 in magnitude are distinguished.
 */
export function createRng(...words: number[]): Rng {
  let h = 0x6a09e667;
  for (const w of words) {
    if (!Number.isSafeInteger(w)) throw new Error(`rng seed word must be a safe integer, got ${w}`);
    const lo = w >>> 0;
    const hi = Math.floor(w / 0x100000000) >>> 0;
    h = fmix32(h ^ lo);
    h = fmix32((h + 0x9e3779b9) ^ hi);
  }
  const sm = splitmix32(h);
  let s0 = sm(), s1 = sm(), s2 = sm(), s3 = sm();
  if ((s0 | s1 | s2 | s3) === 0) s0 = 1;
  const rotl = (x: number, k: number) => (x << k) | (x >>> (32 - k));
  return () => {
    const result = Math.imul(rotl(Math.imul(s1, 5), 7), 9) >>> 0;
    const t = s1 << 9;
    s2 ^= s0;
    s3 ^= s1;
    s1 ^= s2;
    s0 ^= s3;
    s2 ^= t;
    s3 = rotl(s3, 11);
    return result;
  };
}

/** Uniform integer in [0, n) without modulo bias (rejection sampling). */
export function randomBelow(rng: Rng, n: number): number {
  if (n <= 0 || n > 0x100000000) throw new Error(`randomBelow: bad range ${n}`);
  const limit = 0x100000000 - (0x100000000 % n);
  for (;;) {
    const r = rng();
    if (r < limit) return r % n;
  }
}

/** Fisher-Yates shuffle in place. */
export function shuffleInPlace(a: Int32Array | number[], rng: Rng): void {
  for (let i = a.length - 1; i > 0; i--) {
    const j = randomBelow(rng, i + 1);
    const x = a[i];
    a[i] = a[j];
    a[j] = x;
  }
}

/** The epoch's shuffled order of 0..n-1 for a seed. */
export function permutation(n: number, seed: number, epoch: number): Int32Array {
  const p = new Int32Array(n); // (n)
  for (let i = 0; i < n; i++) p[i] = i;
  shuffleInPlace(p, createRng(seed, epoch));
  return p;
}

/** Options of `BatchSampler`. */
export interface SamplerOptions {
  /** Samples per batch on this rank. */
  batchSize: number;
  /** Shuffle seed (the recipe's `seed`). */
  seed: number;
  /** Shuffle each epoch (default true). */
  shuffle?: boolean;
  rank?: number;
  worldSize?: number;
  /** Drop each rank's incomplete last batch (default true, torchtune's training loader). */
  dropLast?: boolean;
}

/** Which samples form batch `step` of `epoch` on this rank; see the module doc. */
export class BatchSampler {
  readonly numSamples: number;
  readonly batchSize: number;
  readonly seed: number;
  readonly shuffle: boolean;
  readonly rank: number;
  readonly worldSize: number;
  /** Samples this rank sees per epoch: ceil(N / W). */
  readonly samplesPerRank: number;
  /** Batches per epoch on each rank (the last may be short when dropLast is false). */
  readonly stepsPerEpoch: number;
  readonly dropLast: boolean;
  #cache: { epoch: number; order: Int32Array } | null = null;

  constructor(numSamples: number, options: SamplerOptions) {
    this.numSamples = numSamples;
    this.batchSize = options.batchSize;
    this.seed = options.seed;
    this.shuffle = options.shuffle ?? true;
    this.rank = options.rank ?? 0;
    this.worldSize = options.worldSize ?? 1;
    if (!(this.batchSize >= 1)) throw new Error(`batchSize must be >= 1, got ${this.batchSize}`);
    if (!(this.rank >= 0 && this.rank < this.worldSize)) {
      throw new Error(`rank ${this.rank} outside world of ${this.worldSize}`);
    }
    this.dropLast = options.dropLast ?? true;
    this.samplesPerRank = Math.ceil(numSamples / this.worldSize);
    this.stepsPerEpoch = this.dropLast
      ? Math.floor(this.samplesPerRank / this.batchSize)
      : Math.ceil(this.samplesPerRank / this.batchSize);
  }

  /** This rank's sample indices for an epoch, in visiting order. */
  epochIndices(epoch: number): Int32Array {
    if (this.#cache?.epoch === epoch) return this.#cache.order;
    const N = this.numSamples;
    const W = this.worldSize;
    const all = this.shuffle
      ? permutation(N, this.seed, epoch)
      : Int32Array.from({ length: N }, (_, i) => i);
    const order = new Int32Array(this.samplesPerRank); // (ceil(N / W))
    for (let k = 0; k < this.samplesPerRank; k++) order[k] = all[(this.rank + k * W) % N];
    this.#cache = { epoch, order };
    return order;
  }

  /** Sample indices of batch `step` (0-based) of `epoch`. */
  batchIndices(epoch: number, step: number): Int32Array {
    if (!(step >= 0 && step < this.stepsPerEpoch)) {
      throw new Error(`step ${step} outside epoch of ${this.stepsPerEpoch} steps`);
    }
    return this.epochIndices(epoch).slice(step * this.batchSize, (step + 1) * this.batchSize);
  }
}

/** A batch with its position, for logging and checkpointing. */
export interface PositionedBatch extends Batch {
  epoch: number;
  /** 0-based step inside the epoch; resume at (epoch, step + 1) after it. */
  step: number;
  /** (B) dataset indices of the rows of this batch. */
  indices: Int32Array;
}

/** Options of `DataLoader`. */
export interface DataLoaderOptions extends SamplerOptions, CollateOptions {}

/**
 * Shuffled, collated batches over tokenized samples. A recipe checkpoints the (epoch, step)
 * of the next batch and later calls `batches(epoch, step)` to continue bitwise identically.
 */
export class DataLoader {
  readonly sampler: BatchSampler;
  readonly #samples: readonly Sample[];
  readonly #collate: CollateOptions;

  constructor(samples: readonly Sample[], options: DataLoaderOptions) {
    this.#samples = samples;
    this.sampler = new BatchSampler(samples.length, options);
    this.#collate = {
      padId: options.padId,
      padToMultipleOf: options.padToMultipleOf,
      padTo: options.padTo,
    };
  }

  /** Full batches per epoch. */
  get stepsPerEpoch(): number {
    return this.sampler.stepsPerEpoch;
  }

  /** The collated batch at (epoch, step). */
  batch(epoch: number, step: number): PositionedBatch {
    const indices = this.sampler.batchIndices(epoch, step);
    const batch = collatePadded(Array.from(indices, (i) => this.#samples[i]), this.#collate);
    return { ...batch, epoch, step, indices };
  }

  /** Batches of one epoch from `startStep` (default 0) to its end. */
  *batches(epoch: number, startStep = 0): Generator<PositionedBatch> {
    for (let step = startStep; step < this.stepsPerEpoch; step++) yield this.batch(epoch, step);
  }
}
