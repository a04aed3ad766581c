/**
 * Held-out accuracy: greedy generation from the Alpaca prompt of each held-out word, scored
 * by exact match with the task's answer. Prompts of equal token length run as one batch.
 */
import type { Backend } from "../backend/ops.ts";
import { generateTokens } from "../generation/generate.ts";
import { promptTokens } from "../generation/prompt.ts";
import type { LlamaModel } from "../models/llama/model.ts";
import { SeededRandom } from "../params/random.ts";
import type { Tokenizer } from "../tokenizers/types.ts";
import type { DemoTask } from "./tasks.ts";

/** One scored generation. */
export interface Scored {
  input: string;
  expected: string;
  generated: string;
  correct: boolean;
}

/** Accuracy of a task over held-out words. */
export interface TaskAccuracy {
  accuracy: number;
  correct: number;
  total: number;
  results: Scored[];
}

/** Greedy answers of `model` for `task` on `words`, with exact-match accuracy. */
export function evaluateTask(
  model: LlamaModel,
  backend: Backend,
  tokenizer: Tokenizer,
  task: DemoTask,
  words: readonly string[],
): TaskAccuracy {
  const prompts = words.map((w) =>
    promptTokens(tokenizer, { instruction: task.instruction, input: w }, {
      instructTemplate: "alpaca",
      chatFormat: null,
    })
  );
  const byLen = new Map<number, number[]>(); // prompt length -> word indices
  prompts.forEach((p, i) => byLen.set(p.length, [...(byLen.get(p.length) ?? []), i]));
  const generated = new Array<string>(words.length);
  const longest = words.reduce((m, w) => Math.max(m, task.apply(w).length), 0);
  for (const idx of byLen.values()) {
    const r = generateTokens(model, backend, idx.map((i) => prompts[i]), {
      temperature: 0,
      topK: null,
      topP: null,
      maxNewTokens: longest + 2, // room for a wrong, longer answer; EOS ends a right one
      stopIds: tokenizer.stopIds,
      rng: new SeededRandom(0),
    });
    idx.forEach((i, k) => generated[i] = tokenizer.decode(r.tokens[k]));
  }
  const results = words.map((w, i) => {
    const expected = task.apply(w);
    return { input: w, expected, generated: generated[i], correct: generated[i] === expected };
  });
  const correct = results.filter((r) => r.correct).length;
  return { accuracy: correct / words.length, correct, total: words.length, results };
}

/** An accuracy as a whole percentage ("42%"). */
export const pct = (a: number): string => `${(100 * a).toFixed(0)}%`;
