/**
 * Reward functions of GRPO, each a registered `reward` component (a config's `reward_fns`
 * list), plus a user's own function from a local TypeScript module
 * (`_component_: file:./my_reward.ts#score`, resolved relative to the config file).
 *
 * A reward function scores one completion at a time and returns its reward and whether it
 * counts as a success (torchtune's RewardOutput.successes). The recipe sums the rewards of
 * all functions (torchtune's batched_rewards: rewards.sum(-1)) before the group advantages.
 *
 * torchtune's GSM8K rewards (torchtune/dev/rl/rewards.py): the completion is what follows
 * the prompt's "Assistant: <think>", so the text parsed is "<think>" + completion; the first
 * <think>...</think> is the chain of thought and the first <answer>...</answer> the answer
 * (both stripped). `math_response_correct` compares with math_verify in torchtune; here the
 * answers are compared as numbers (commas, a leading $ and a trailing unit-free period
 * dropped) and else as trimmed strings, which covers GSM8K's integer answers but not
 * math_verify's LaTeX parsing.
 */
import { TuneError } from "../errors.ts";

/** What a reward function sees of one completion. */
export interface RewardSample {
  /** The prompt text (as the dataset rendered it). */
  prompt: string;
  /** The decoded completion, without the stop token. */
  completion: string;
  /** The dataset's reference answer. */
  answer: string;
  /** The completion's token ids (stop token excluded). */
  completionIds: Int32Array;
}

/** One function's score of one completion. */
export interface RewardScore {
  reward: number;
  success: number;
}

/** A reward function, as a `reward` component builds it. */
export interface RewardFn {
  /** Name in metrics (rewards/<name>/mean). */
  readonly name: string;
  score(sample: RewardSample): RewardScore;
}

/** `<think>...</think>` and `<answer>...</answer>` of "<think>" + completion (torchtune's extract_tags). */
export function extractTags(completion: string): { cot: string; answer: string } {
  const text = "<think>" + completion;
  const think = /<think>([\s\S]*?)<\/think>/.exec(text);
  const answer = /<answer>([\s\S]*?)<\/answer>/.exec(text);
  return { cot: think ? think[1].trim() : "", answer: answer ? answer[1].trim() : "" };
}

/** A number written as GSM8K answers are ("1,234", "$18", "3.50"), or null. */
export function parseNumber(s: string): number | null {
  const t = s.trim().replace(/^\$/, "").replace(/,/g, "").replace(/\.$/, "");
  if (!/^[+-]?(\d+\.?\d*|\.\d+)$/.test(t)) return null;
  return Number(t);
}

/** Whether an attempt equals the gold answer: as numbers when both are, else as trimmed text. */
export function answersMatch(gold: string, attempt: string): boolean {
  const g = parseNumber(gold), a = parseNumber(attempt);
  if (g !== null && a !== null) return g === a;
  return gold.trim() === attempt.trim();
}

/** Escape a string for use inside a RegExp. */
function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** torchtune's ThinkingAnswerFormattingReward: soft (tags in order) plus strict (tags on their own lines). */
export function formattingReward(
  opts: { thinkTag: string; answerTag: string; positive: number; negative: number },
): RewardFn {
  const th = escapeRegExp(opts.thinkTag), an = escapeRegExp(opts.answerTag);
  const thinkRe = new RegExp(`<${th}>[\\s\\S]*?</${th}>`, "g");
  const answerRe = new RegExp(`<${an}>[\\s\\S]*?</${an}>`, "g");
  // Python's re.match(..., DOTALL | MULTILINE): anchored at 0 (sticky), $ at any line end
  const strictRe = new RegExp(
    `^<${th}>\\n.*?\\n</${th}>\\n<${an}>\\n.*?\\n</${an}>\\n$`,
    "msy",
  );
  return {
    name: "formatting",
    score({ completion }) {
      strictRe.lastIndex = 0;
      const strict = strictRe.test(completion) ? opts.positive : opts.negative;
      const thinks = completion.match(thinkRe) ?? [];
      const answers = completion.match(answerRe) ?? [];
      const soft = thinks.length === 1 && answers.length === 1 &&
          completion.indexOf(thinks[0]) < completion.indexOf(answers[0])
        ? opts.positive
        : opts.negative;
      const reward = soft + strict;
      return { reward, success: reward >= opts.positive ? 1 : 0 };
    },
  };
}

/** torchtune's at_least_one_space_between_think_tags: 1 when the chain of thought is not empty. */
export const thinkReward: RewardFn = {
  name: "at_least_one_space_between_think_tags",
  score({ completion }) {
    const ok = extractTags(completion).cot.length > 0 ? 1 : 0;
    return { reward: ok, success: ok };
  },
};

/** torchtune's math_response_correct: 100 right, 50 containing the answer, 1 any answer, else 0. */
export const mathAnswerReward: RewardFn = {
  name: "math_response_correct",
  score({ completion, answer }) {
    const attempt = extractTags(completion).answer;
    if (answersMatch(answer, attempt)) return { reward: 100, success: 1 };
    if (attempt.includes(answer.trim())) return { reward: 50, success: 0 };
    return { reward: attempt.length > 0 ? 1 : 0, success: 0 };
  },
};

/** torchtune's FormattedMathCorrectnessReward on the whole completion (numbers as `answersMatch`). */
export function mathCorrectnessReward(positive: number, negative: number): RewardFn {
  return {
    name: "math_correctness",
    score({ completion, answer }) {
      const nums = completion.match(/[+-]?\$?\d[\d,]*(\.\d+)?/g) ?? [];
      const last = nums.length ? nums[nums.length - 1] : "";
      if (last && answersMatch(answer, last)) return { reward: positive, success: 1 };
      if (completion.includes(answer.trim())) return { reward: positive / 2, success: 0 };
      return { reward: negative, success: 0 };
    },
  };
}

/** The completion (trimmed when `strip`) equals the answer. */
export function exactMatchReward(
  opts: { strip: boolean; positive: number; negative: number },
): RewardFn {
  return {
    name: "exact_match",
    score({ completion, answer }) {
      const [c, a] = opts.strip ? [completion.trim(), answer.trim()] : [completion, answer];
      return c === a
        ? { reward: opts.positive, success: 1 }
        : { reward: opts.negative, success: 0 };
    },
  };
}

/** The completion matches `pattern` ({answer} stands for the escaped answer); search or full match. */
export function regexMatchReward(
  opts: { pattern: string; full: boolean; positive: number; negative: number },
): RewardFn {
  try {
    new RegExp(opts.pattern.replaceAll("{answer}", "x"));
  } catch (e) {
    throw new TuneError(`reward pattern ${opts.pattern} is not a regular expression: ${e}`);
  }
  return {
    name: "regex_match",
    score({ completion, answer }) {
      const src = opts.pattern.replaceAll("{answer}", escapeRegExp(answer.trim()));
      const re = new RegExp(opts.full ? `^(?:${src})$` : src, "s");
      return re.test(completion)
        ? { reward: opts.positive, success: 1 }
        : { reward: opts.negative, success: 0 };
    },
  };
}

/** -coefficient per completion token beyond `free_tokens`; success when within them. */
export function lengthPenalty(opts: { freeTokens: number; coefficient: number }): RewardFn {
  return {
    name: "length_penalty",
    score({ completionIds }) {
      const over = Math.max(0, completionIds.length - opts.freeTokens);
      return { reward: -opts.coefficient * over, success: over === 0 ? 1 : 0 };
    },
  };
}

/** A `file:` reference split into its path and export name (default `score`). */
export function parseFileReward(ref: string): { path: string; exportName: string } {
  const body = ref.slice("file:".length);
  const hash = body.lastIndexOf("#");
  const path = hash < 0 ? body : body.slice(0, hash);
  const exportName = hash < 0 ? "score" : body.slice(hash + 1);
  if (!path || !/\.(ts|js|mjs|mts)$/.test(path) || !/^[A-Za-z_$][\w$]*$/.test(exportName)) {
    throw new TuneError(
      `reward ${ref} must look like file:./my_reward.ts#score (a .ts or .js module and an exported function)`,
    );
  }
  return { path, exportName };
}

/**
 * A user's reward function from a local module: `export function score(sample)` returning a
 * number (success when > 0) or `{ reward, success }` (synchronously: the training loop does
 * not wait). `configDir` is the
 * folder of the config file that names it.
 */
export async function loadFileReward(ref: string, configDir: string): Promise<RewardFn> {
  const { path, exportName } = parseFileReward(ref);
  const { isAbsolute, resolve } = await import("node:path");
  const { pathToFileURL } = await import("node:url");
  const full = isAbsolute(path) ? path : resolve(configDir, path);
  try {
    Deno.statSync(full);
  } catch {
    throw new TuneError(`reward module ${full} (from ${ref}) does not exist`);
  }
  const mod = await import(pathToFileURL(full).href) as Record<string, unknown>;
  const fn = mod[exportName];
  if (typeof fn !== "function") {
    throw new TuneError(`${full} has no exported function ${exportName} (from ${ref})`);
  }
  const name = exportName === "score"
    ? full.replace(/^.*[\\/]/, "").replace(/\.\w+$/, "")
    : exportName;
  return {
    name,
    score(sample) {
      const out = fn(sample);
      if (out instanceof Promise) {
        throw new TuneError(
          `reward ${ref} returned a promise; return a number or { reward, success }`,
        );
      }
      if (typeof out === "number" && Number.isFinite(out)) {
        return { reward: out, success: out > 0 ? 1 : 0 };
      }
      const o = out as Partial<RewardScore> | null;
      if (o && typeof o.reward === "number" && Number.isFinite(o.reward)) {
        return { reward: o.reward, success: Number(o.success ?? (o.reward > 0 ? 1 : 0)) };
      }
      throw new TuneError(
        `reward ${ref} returned ${
          JSON.stringify(out)
        }; return a finite number or { reward, success }`,
      );
    },
  };
}

/** Rewards (S, F) and successes (S, F) of S samples under F functions. */
export interface RewardTable {
  names: string[];
  rewards: Float64Array; // (S, F)
  successes: Float64Array; // (S, F)
  /** (S) the sum over functions: what the advantages normalise. */
  total: Float64Array;
}

/** Score every sample with every function. */
export function scoreAll(fns: readonly RewardFn[], samples: readonly RewardSample[]): RewardTable {
  const S = samples.length, F = fns.length;
  const t: RewardTable = {
    names: fns.map((f) => f.name),
    rewards: new Float64Array(S * F),
    successes: new Float64Array(S * F),
    total: new Float64Array(S),
  };
  for (let s = 0; s < S; s++) {
    for (let f = 0; f < F; f++) {
      const r = fns[f].score(samples[s]);
      t.rewards[s * F + f] = r.reward;
      t.successes[s * F + f] = r.success;
      t.total[s] += r.reward;
    }
  }
  return t;
}
