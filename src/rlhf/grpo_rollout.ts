/**
 * GRPO's generation phase: G completions of each prompt with the current policy (batched
 * KV-cache sampling, `generateTokens` with the G copies of a prompt as one batch, each
 * sequence stopping on its own stop token), then the (S, T) training rows of the S = prompts
 * * G sequences and their rewards.
 *
 * Row layout (the model's, row t predicts token t + 1): prompt, completion, then the stop
 * token when the sequence stopped on one (so the policy learns to stop), then padding.
 * Targets are -100 except at the completion's positions (those predicting a completion or
 * stop token), so only completion tokens count in the loss.
 */
import type { Backend } from "../backend/ops.ts";
import { generateTokens } from "../generation/generate.ts";
import type { SamplingOptions } from "../generation/sampling.ts";
import type { LlamaModel } from "../models/llama/model.ts";
import { SeededRandom } from "../params/random.ts";
import type { Tokenizer } from "../tokenizers/types.ts";
import type { PromptSample } from "./grpo_data.ts";
import { type RewardFn, type RewardTable, scoreAll } from "./rewards.ts";

/** The sequences of one generation round. */
export interface Rollout {
  /** S = prompts * G, group by group. */
  S: number;
  T: number;
  tokens: Int32Array; // (S, T)
  targets: Int32Array; // (S, T)
  /** Completion ids without the stop token, and their text. */
  completions: number[][];
  texts: string[];
  /** The prompt sample of each sequence. */
  samples: PromptSample[];
  rewards: RewardTable;
  /** Tokens generated (stop tokens included) and the seconds it took. */
  generatedTokens: number;
  generationSeconds: number;
  /** Sum over sampled positions of the policy's entropy (temperature 1), and their count. */
  entropySum: number;
  entropyCount: number;
}

/** Options of `rollout`. */
export interface RolloutOptions extends SamplingOptions {
  G: number;
  /** Row length T (at least the longest prompt + maxNewTokens). */
  T: number;
  maxNewTokens: number;
  /** The seed of each prompt's sampling (so a round split over ranks samples the same). */
  seeds: readonly number[];
}

/** Entropy of softmax(logits) in nats. */
export function entropy(logits: Float32Array): number {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  let z = 0, s = 0;
  for (const v of logits) {
    const e = Math.exp(v - max);
    z += e;
    s += e * (v - max);
  }
  return Math.log(z) - s / z;
}

/** Generate, lay out and score the completions of `prompts`. */
export function rollout(
  model: LlamaModel,
  backend: Backend,
  tokenizer: Tokenizer,
  prompts: readonly PromptSample[],
  rewardFns: readonly RewardFn[],
  o: RolloutOptions,
): Rollout {
  const { G, T } = o;
  const S = prompts.length * G;
  const tokens = new Int32Array(S * T).fill(Math.max(0, tokenizer.padId));
  const targets = new Int32Array(S * T).fill(-100);
  const completions: number[][] = [];
  const samples: PromptSample[] = [];
  const stop = new Set(tokenizer.stopIds);
  let generatedTokens = 0, entropySum = 0, entropyCount = 0;
  const t0 = performance.now();
  prompts.forEach((p, i) => {
    if (p.tokens.length + o.maxNewTokens > T) {
      throw new Error(`prompt of ${p.tokens.length} tokens + ${o.maxNewTokens} exceeds T=${T}`);
    }
    const r = generateTokens(model, backend, Array.from({ length: G }, () => p.tokens), {
      ...o,
      maxNewTokens: o.maxNewTokens,
      stopIds: [...stop],
      rng: new SeededRandom(o.seeds[i]),
      onLogits: (_b, logits) => {
        entropySum += entropy(logits);
        entropyCount++;
      },
    });
    for (let g = 0; g < G; g++) {
      const s = i * G + g;
      const ids = r.tokens[g];
      const seq = [...p.tokens, ...ids];
      if (r.finish[g] === "stop") seq.push(tokenizer.stopIds[0] ?? tokenizer.eosId);
      generatedTokens += seq.length - p.tokens.length;
      tokens.set(seq, s * T);
      for (let t = p.tokens.length - 1; t < seq.length - 1; t++) targets[s * T + t] = seq[t + 1];
      completions.push(ids);
      samples.push(p);
    }
  });
  const generationSeconds = (performance.now() - t0) / 1000;
  const texts = completions.map((c) => tokenizer.decode(c));
  const rewards = scoreAll(
    rewardFns,
    texts.map((completion, s) => ({
      prompt: samples[s].prompt,
      completion,
      answer: samples[s].answer,
      completionIds: Int32Array.from(completions[s]),
    })),
  );
  return {
    S,
    T,
    tokens,
    targets,
    completions,
    texts,
    samples,
    rewards,
    generatedTokens,
    generationSeconds,
    entropySum,
    entropyCount,
  };
}
