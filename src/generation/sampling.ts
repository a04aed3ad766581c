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
 * The distribution sampling draws from (temperature > 0): softmax(logits / temperature)
 * restricted to the top-k and then the top-p set, renormalised. Filtered tokens get 0.
 */
export function samplingDistribution(logits: Float32Array, o: SamplingOptions): Float64Array {
  const V = logits.length;
  const scaled = new Float64Array(V); // (V)
  for (let i = 0; i < V; i++) scaled[i] = logits[i] / o.temperature;
  if (o.topK !== null && o.topK < V) {
    // pivot = the k-th largest value; everything below it is dropped (ties survive, as torch)
    const pivot = kthLargest(scaled, o.topK);
    for (let i = 0; i < V; i++) if (scaled[i] < pivot) scaled[i] = -Infinity;
  }
  let max = -Infinity;
  for (let i = 0; i < V; i++) if (scaled[i] > max) max = scaled[i];
  const probs = new Float64Array(V); // (V)
  let sum = 0;
  for (let i = 0; i < V; i++) {
    probs[i] = scaled[i] === -Infinity ? 0 : Math.exp(scaled[i] - max);
    sum += probs[i];
  }
  for (let i = 0; i < V; i++) probs[i] /= sum;
  if (o.topP !== null && o.topP < 1) {
    // most likely first; a token is kept while the mass before it is still below top_p
    const order = Array.from({ length: V }, (_, i) => i).filter((i) => probs[i] > 0);
    order.sort((a, b) => probs[b] - probs[a] || a - b);
    let mass = 0;
    let kept = 0;
    for (const i of order) {
      if (mass >= o.topP) probs[i] = 0;
      else {
        mass += probs[i];
        kept += probs[i];
      }
    }
    for (let i = 0; i < V; i++) probs[i] /= kept;
  }
  return probs;
}

/**
 * The k-th largest value of `x` (1 <= k <= length), as `Float64Array.from(x).sort()[n - k]`
 * (-0 and +0 may trade places: the pivot is only compared with <) but by selection (Hoare
 * partitioning, expected O(n)) instead of a full sort. With a NaN (which the typed-array sort
 * orders last) it falls back to that sort.
 */
export function kthLargest(x: Float64Array, k: number): number {
  const n = x.length;
  const a = Float64Array.from(x);
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

/** The next token for one row of logits (V). */
export function sampleToken(
  logits: Float32Array,
  o: SamplingOptions,
  rng: SeededRandom,
): number {
  if (o.temperature === 0) return argmax(logits);
  return drawFrom(samplingDistribution(logits, o), rng);
}
