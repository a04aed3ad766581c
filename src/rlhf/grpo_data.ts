/**
 * Prompt datasets of GRPO (`rl_dataset` components): each sample is a prompt to complete and
 * the reference answer the rewards check. Rows come from the project's one loader
 * (src/data/source.ts: local json/csv files or the Hugging Face Hub).
 *
 * - torchtune's `gsm8k_dataset` (torchtune/dev/grpo/gsm8k.py + data.py's RLDataset): the
 *   question in torchtune's R1-style prompt ending in "Assistant: <think>", the answer the
 *   text after "#### " of GSM8K's solution; `partition: start-end/total` keeps the rows whose
 *   index modulo total lies in [start, end] (torchtune's default filter).
 * - `prompt_answer_dataset`: any rows with a prompt column and an answer column, the prompt
 *   optionally put into a template with `{prompt}`.
 */
import { loadRows } from "../data/source.ts";
import type { Row } from "../data/types.ts";
import { TuneError } from "../errors.ts";
import type { Tokenizer } from "../tokenizers/types.ts";

/** torchtune's BASE_PROMPT (dev/grpo/data.py), its %s written as {prompt}. */
export const R1_PROMPT =
  "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. " +
  "The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. " +
  "The reasoning process and answer are enclosed within <think></think> and <answer></answer> tags, respectively, " +
  "i.e., <think>reasoning process here</think> <answer>answer here</answer>. User: {prompt}. Assistant: <think>";

/** One prompt to complete. */
export interface PromptSample {
  prompt: string;
  /** (P) prompt ids, BOS first when the tokenizer has one, no EOS. */
  tokens: number[];
  answer: string;
}

/** A loaded prompt dataset. */
export interface PromptDataset {
  samples: PromptSample[];
  source: string;
}

/** What an `rl_dataset` component builds; the recipe calls `load` once it has a tokenizer. */
export interface PromptDatasetBuilder {
  readonly name: string;
  load(tokenizer: Tokenizer): Promise<PromptDataset>;
}

/** Options of `promptAnswerDataset`. */
export interface PromptAnswerConfig {
  name: string;
  source: string;
  dataFiles?: string | string[] | null;
  split?: string;
  subset?: string | null;
  promptColumn: string;
  answerColumn: string;
  /** Text with `{prompt}`, or null for the prompt as it is. */
  template: string | null;
  /** Turn a row's answer cell into the answer (GSM8K: the part after "#### "). */
  answerOf?: (cell: string, index: number) => string;
  /** Keep a row (by its index in the split). */
  keep?: (index: number) => boolean;
}

/** Parse torchtune's `partition` ("start-end/total") into a row filter. */
export function partitionFilter(partition: string | null): (index: number) => boolean {
  if (partition === null) return () => true;
  const m = /^(\d+)-(\d+)\/(\d+)$/.exec(partition);
  if (!m) {
    throw new TuneError(
      `dataset.partition ${partition} must look like start-end/total (e.g. 0-8/10)`,
    );
  }
  const [start, end, total] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (total < 1) throw new TuneError(`dataset.partition ${partition}: total must be at least 1`);
  return (i) => start <= i % total && i % total <= end;
}

/** GSM8K's answer: the text after "#### " of the solution (torchtune's normalize_gsm). */
export function gsm8kAnswer(solution: string, index: number): string {
  const parts = solution.split("#### ");
  if (parts.length !== 2) {
    throw new TuneError(
      `GSM8K row ${index}: the answer column must hold one "#### " before the final answer`,
    );
  }
  return parts[1];
}

function cell(row: Row, column: string, index: number, label: string): string {
  const v = row[column];
  if (typeof v === "string") return v;
  if (typeof v === "number") return String(v);
  throw new TuneError(
    `${label} row ${index} has no text column '${column}' (columns: ${
      Object.keys(row).join(", ")
    }); set dataset.column_map`,
  );
}

/** A prompt dataset over rows with a prompt and an answer column. */
export function promptAnswerDataset(cfg: PromptAnswerConfig): PromptDatasetBuilder {
  if (cfg.template !== null && !cfg.template.includes("{prompt}")) {
    throw new TuneError(`dataset.prompt_template must contain {prompt}, got ${cfg.template}`);
  }
  return {
    name: cfg.name,
    async load(tokenizer) {
      const { rows, label } = await loadRows({
        source: cfg.source,
        dataFiles: cfg.dataFiles ?? null,
        split: cfg.split ?? "train",
        subset: cfg.subset ?? undefined,
      });
      const samples: PromptSample[] = [];
      rows.forEach((row, i) => {
        if (cfg.keep && !cfg.keep(i)) return;
        const q = cell(row, cfg.promptColumn, i, label);
        const a = cell(row, cfg.answerColumn, i, label);
        const prompt = cfg.template === null ? q : cfg.template.replace("{prompt}", q);
        samples.push({
          prompt,
          tokens: tokenizer.encode(prompt, { bos: true, eos: false }),
          answer: cfg.answerOf ? cfg.answerOf(a, i) : a,
        });
      });
      if (samples.length === 0) throw new TuneError(`dataset ${label} has no prompts`);
      return { samples, source: label };
    },
  };
}
