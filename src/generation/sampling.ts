/**
 * Next-token selection: greedy (temperature 0), or sampling from the temperature-scaled
 * softmax restricted by top-k and top-p (nucleus), drawn with a seeded generator so a run
 * repeats exactly for a given seed.
 *
 * Order of the filters, as torchtune's `sample` and Hugging Face's logits warpers: divide
 * the logits by the temperature, keep the k largest (ties with the k-th are kept), softmax,
 * then keep the smallest set of most likely tokens whose probability reaches top_p.
 */
import { TuneError } from "../errors.ts";
import type { SeededRandom } from "../params/random.ts";

/** How the next token is chosen. */
export interface SamplingOptions {
  /** 0: greedy (argmax); otherwise logits are divided by it before the softmax. */
  temperature: number;
  /** Keep only the k most likely tokens (null: all). */
  topK: number | null;
  /** Keep the smallest set of most likely tokens whose probabilities sum to at least p (null: off). */
  topP: number | null;
}

/** A TuneError for values the filters cannot use. */
export function checkSamplingOptions(o: SamplingOptions): void {
  if (!(o.temperature >= 0) || !Number.isFinite(o.temperature)) {
    throw new TuneError(`temperature must be >= 0 (0: greedy), got ${o.temperature}`);
  }
  if (o.topK !== null && (!Number.isInteger(o.topK) || o.topK < 1)) {
    throw new TuneError(`top_k must be a positive integer or null, got ${o.topK}`);
  }
  if (o.topP !== null && !(o.topP > 0 && o.topP <= 1)) {
    throw new TuneError(`top_p must be in (0, 1] or null, got ${o.topP}`);
  }
}

/** Index of the largest logit (the first one on ties, as torch.argmax). */
export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/**
 * The work arrays of the sampling filters for a vocabulary of V, made once per generation and
 * reused for every token (a sampled token then allocates nothing).
 */
export class SamplingScratch {
  readonly scaled: Float64Array; // (V) logits / temperature, then top-k filtered
  readonly select: Float64Array; // (V) kthLargest's partitioned copy
  readonly probs: Float64Array; // (V) the distribution
  readonly order: Int32Array; // (V) top-p: the ids with probability > 0, most likely first
  constructor(readonly V: number) {
    this.scaled = new Float64Array(V);
    this.select = new Float64Array(V);
    this.probs = new Float64Array(V);
    this.order = new Int32Array(V);
  }
}

/**
 * The distribution sampling draws from (temperature > 0): softmax(logits / temperature)
 * restricted to the top-k and then the top-p set, renormalised. Filtered tokens get 0.
 * Returns `scratch.probs` (V), overwritten by the next call with the same scratch.
 */
export function samplingDistribution(
  logits: Float32Array,
  o: SamplingOptions,
  scratch: SamplingScratch = new SamplingScratch(logits.length),
): Float64Array {
  const V = logits.length;
  if (scratch.V !== V) throw new Error(`sampling scratch for ${scratch.V} logits, got ${V}`);
  const scaled = scratch.scaled; // (V)
  for (let i = 0; i < V; i++) scaled[i] = logits[i] / o.temperature;
  if (o.topK !== null && o.topK < V) {
    // pivot = the k-th largest value; everything below it is dropped (ties survive, as torch)
    const pivot = kthLargest(scaled, o.topK, scratch.select);
    for (let i = 0; i < V; i++) if (scaled[i] < pivot) scaled[i] = -Infinity;
  }
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (scaled[i] > max) max = scaled[i];
  const probs = scratch.probs; // (V)
  let sum = 0;
  for (let i = 0; i < V; i++) {
    probs[i] = scaled[i] === -Infinity ? 0 : Math.exp(scaled[i] - max);
    sum += probs[i];
  }
  for (let i = 0; i < V; i++) probs[i] /= sum;
  if (o.topP !== null && o.topP < 1) {
    const kept = nucleus(probs, o.topP, scratch);
    for (let i = 0; i < V; i++) probs[i] /= kept;
  }
  return probs;
}

/**
 * Top-p over `probs` (V) in place: walking the ids most likely first (probability descending,
 * then id: a total order), a token is kept while the mass before it is still below p and
 * zeroed otherwise; returns the kept mass, summed in that order. Only a prefix of the order is
 * sorted: the ids at or above the m-th largest probability (ties included, so it is a
 * prefix), m doubling from 1024 until the prefix's mass reaches p, after which every id
 * outside it is dropped. The same sums in the same order as sorting all V ids, at the cost of a
 * selection and a short sort (a 128K vocabulary without top_k: 112 -> 2 ms per token).
 */
function nucleus(probs: Float64Array, p: number, s: SamplingScratch): number {
  const V = probs.length;
  for (let m = Math.min(1024, V);; m = Math.min(2 * m, V)) {
    const t = m >= V ? 0 : kthLargest(probs, m, s.select); // the prefix: probs >= t (> 0)
    let n = 0, rest = false;
    for (let i = 0; i < V; i++) {
      if (!(probs[i] > 0)) continue;
      if (probs[i] >= t) s.order[n++] = i;
      else rest = true;
    }
    const order = s.order.subarray(0, n).sort((a, b) => probs[b] - probs[a] || a - b);
    let mass = 0;
    let kept = 0;
    for (const i of order) {
      if (mass >= p) probs[i] = 0;
      else {
        mass += probs[i];
        kept += probs[i];
      }
    }
    if (rest && mass < p) continue; // nothing was dropped yet: a longer prefix
    if (rest) { for (let i = 0; i < V; i++) if (probs[i] < t) probs[i] = 0; }
    return kept;
  }
}

/**
 * The k-th largest value of `x` (1 <= k <= length), as `Float64Array.from(x).sort()[n - k]`
 * (-0 and +0 may trade places: the pivot is only compared with <) but by selection (Hoare
 * partitioning, expected O(n)) instead of a full sort. With a NaN (which the typed-array sort
 * orders last) it falls back to that sort. `work` (n) receives the partitioned copy.
 */
export function kthLargest(x: Float64Array, k: number, work?: Float64Array): number {
  const n = x.length;
  const a = work ? work.subarray(0, n) : new Float64Array(n);
  a.set(x);
  for (let i = 0; i < n; i++) if (a[i] !== a[i]) return a.sort()[n - k];
  const want = n - k; // index of the answer in ascending order
  let lo = 0, hi = n - 1;
  while (lo < hi) {
    // median of three as the pivot value
    const mid = (lo + hi) >> 1;
    const p0 = a[lo], p1 = a[mid], p2 = a[hi];
    const pv = p0 < p1 ? (p1 < p2 ? p1 : p0 < p2 ? p2 : p0) : (p0 < p2 ? p0 : p1 < p2 ? p2 : p1);
    let i = lo, j = hi;
    while (i <= j) {
      while (a[i] < pv) i++;
      while (a[j] > pv) j--;
      if (i <= j) {
        const t = a[i];
        a[i] = a[j];
        a[j] = t;
        i++;
        j--;
      }
    }
    // now a[lo..j] <= pv <= a[i..hi], and every element between j and i equals pv
    if (want <= j) hi = j;
    else if (want >= i) lo = i;
    else return pv;
  }
  return a[want];
}

/** Draw an index from `probs` (summing to 1) with one uniform number from `rng`. */
export function drawFrom(probs: Float64Array, rng: SeededRandom): number {
  const u = rng.uniform();
  let acc = 0;
  let last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] <= 0) continue;
    acc += probs[i];
    last = i;
    if (u < acc) return i;
  }
  return last; // rounding left u above the total
}

/** The next token for one row of logits (V); `scratch` (V) is reused when given. */
export function sampleToken(
  logits: Float32Array,
  o: SamplingOptions,
  rng: SeededRandom,
  scratch?: SamplingScratch,
): number {
  if (o.temperature === 0) return argmax(logits);
  return drawFrom(samplingDistribution(logits, o, scratch), rng);
}
