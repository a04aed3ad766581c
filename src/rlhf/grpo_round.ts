/**
 * What the GRPO recipes (single device and distributed) share about a generation round:
 * which prompts it takes, the seeds they are sampled with, and its metrics as sums that
 * an all-reduce can add up over ranks (so 2 ranks log what one device logs).
 */
import { mixSeed, SeededRandom } from "../params/random.ts";
import type { PromptSample } from "./grpo_data.ts";
import type { Rollout } from "./grpo_rollout.ts";

/**
 * The prompt indices of round `i` of `epoch`: `perRound` prompts of the epoch's order
 * (shuffled from the run's seed when `shuffle`), with the sampling seed of each.
 */
export function roundPrompts(
  samples: readonly PromptSample[],
  opts: { perRound: number; seed: number; epoch: number; round: number; shuffle: boolean },
): { prompts: PromptSample[]; seeds: number[] } {
  const n = samples.length;
  const order = Array.from({ length: n }, (_, k) => k);
  if (opts.shuffle) {
    const rng = new SeededRandom(mixSeed(opts.seed, 0x6290, opts.epoch));
    for (let k = n - 1; k > 0; k--) {
      const j = Math.floor(rng.uniform() * (k + 1));
      [order[k], order[j]] = [order[j], order[k]];
    }
  }
  const idx = order.slice(opts.round * opts.perRound, (opts.round + 1) * opts.perRound);
  return {
    prompts: idx.map((k) => samples[k]),
    seeds: idx.map((_, k) => mixSeed(opts.seed, 0x6e11, opts.epoch, opts.round, k)),
  };
}

/**
 * A round's metric sums, in a fixed order: sequences, successes (every function), completion
 * tokens, entropy sum and count, generated tokens, generation seconds, then per function
 * F sums and F sums of squares, then the total reward's sum and sum of squares.
 */
export function roundSums(r: Rollout): number[] {
  const F = r.rewards.names.length, S = r.S;
  let success = 0;
  const sum = new Array<number>(F).fill(0), sq = new Array<number>(F).fill(0);
  let tot = 0, totSq = 0;
  for (let s = 0; s < S; s++) {
    let all = 1;
    for (let f = 0; f < F; f++) {
      const v = r.rewards.rewards[s * F + f];
      sum[f] += v;
      sq[f] += v * v;
      if (!(r.rewards.successes[s * F + f] > 0)) all = 0;
    }
    success += all;
    tot += r.rewards.total[s];
    totSq += r.rewards.total[s] ** 2;
  }
  const length = r.completions.reduce((n, c) => n + c.length, 0);
  return [
    S,
    success,
    length,
    r.entropySum,
    r.entropyCount,
    r.generatedTokens,
    r.generationSeconds,
    ...sum,
    ...sq,
    tot,
    totSq,
  ];
}

/** The metrics of summed `roundSums` (over `ranks` ranks) for the reward functions `names`. */
export function roundMetrics(
  names: readonly string[],
  v: readonly number[],
  ranks = 1,
): Record<string, number> {
  const F = names.length, S = Math.max(1, v[0]);
  const std = (s: number, q: number) => Math.sqrt(Math.max(0, q / S - (s / S) ** 2));
  const m: Record<string, number> = {
    reward: v[7 + 2 * F] / S,
    reward_std: std(v[7 + 2 * F], v[8 + 2 * F]),
  };
  names.forEach((n, f) => {
    m[`rewards/${n}/mean`] = v[7 + f] / S;
    m[`rewards/${n}/std`] = std(v[7 + f], v[7 + F + f]);
  });
  m.success_rate = v[1] / S;
  m.completion_length = v[2] / S;
  m.entropy = v[3] / Math.max(1, v[4]);
  // each rank generates at the same time: the tokens over the mean seconds of a rank
  m.generation_tokens_per_s = v[5] / Math.max(v[6] / ranks, 1e-9);
  return m;
}
