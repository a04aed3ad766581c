/**
 * The demo's instruction data, generated deterministically from a seed: short random
 * lowercase words, and two tasks in Alpaca form (instruction, input, output). The base
 * model learns the format on task A (copy the word); LoRA then teaches task B (a Caesar
 * shift: each letter becomes the next one, z wraps to a). Words are split once into
 * disjoint sets, so held-out words are never trained on, in either phase.
 */
import { SeededRandom } from "../params/random.ts";

/** An Alpaca row. */
export interface AlpacaRow {
  instruction: string;
  input: string;
  output: string;
}

/** A task: its instruction text and what it does to a word. */
export interface DemoTask {
  instruction: string;
  apply(word: string): string;
}

/** Task A (pretraining): repeat the word. */
export const COPY_TASK: DemoTask = { instruction: "Copy the word.", apply: (w) => w };

/** Task B (LoRA): Caesar shift by one ("word" -> "xpse", z -> a). */
export const SHIFT_TASK: DemoTask = {
  instruction: "Shift each letter by one.",
  apply: (w) => [...w].map((c) => String.fromCharCode(97 + (c.charCodeAt(0) - 96) % 26)).join(""),
};

/** Sizes of the generated word sets. */
export interface WordSplitOptions {
  seed: number;
  /** Words for pretraining (task A). */
  pretrain: number;
  /** Words for LoRA fine-tuning (task B). */
  finetune: number;
  /** Held-out words for the accuracy (never trained on). */
  heldOut: number;
  /** Shortest and longest word. */
  minLen: number;
  maxLen: number;
}

/** Three disjoint sets of distinct random lowercase words. */
export function splitWords(o: WordSplitOptions): {
  pretrain: string[];
  finetune: string[];
  heldOut: string[];
} {
  const rng = new SeededRandom(o.seed);
  const seen = new Set<string>();
  const draw = (n: number): string[] => {
    const out: string[] = [];
    while (out.length < n) {
      const len = o.minLen + Math.floor(rng.uniform() * (o.maxLen - o.minLen + 1));
      let w = "";
      for (let i = 0; i < len; i++) w += String.fromCharCode(97 + Math.floor(rng.uniform() * 26));
      if (seen.has(w)) continue;
      seen.add(w);
      out.push(w);
    }
    return out;
  };
  // held-out first, so its words do not depend on the training set sizes
  const heldOut = draw(o.heldOut);
  const pretrain = draw(o.pretrain);
  const finetune = draw(o.finetune);
  return { pretrain, finetune, heldOut };
}

/** Alpaca rows of a task over words. */
export function taskRows(task: DemoTask, words: readonly string[]): AlpacaRow[] {
  return words.map((w) => ({ instruction: task.instruction, input: w, output: task.apply(w) }));
}

/** Rows as JSON lines (one object per line), as `source: json` reads them. */
export function toJsonl(rows: readonly AlpacaRow[]): string {
  return rows.map((r) => JSON.stringify(r)).join("\n") + "\n";
}
