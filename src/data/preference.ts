/**
 * Preference data (torchtune's PreferenceDataset): rows with a chosen and a rejected
 * conversation for the same prompt, tokenized into a pair of samples each with the
 * shifted-label convention of types.ts (prompt messages masked unless train_on_input).
 *
 * Row layouts (torchtune's message transforms):
 * - "chosen_rejected" (ChosenRejectedToMessages, `preference_dataset`): columns `chosen`
 *   and `rejected`, each a list of OpenAI messages `[{role, content}, ...]` that includes
 *   the prompt turns.
 * - "prompt_chosen_rejected" (StackExchangePairedToMessages): string columns `prompt`,
 *   `chosen`, `rejected` -> [user prompt, assistant answer] twice.
 */
import { TuneError } from "../errors.ts";
import type { Tokenizer } from "../tokenizers/types.ts";
import { type ChatFormat, resolveChatFormat, tokenizeMessages } from "./chat_format.ts";
import type { DatasetLoadOptions } from "./datasets.ts";
import { sampleFromMask } from "./labels.ts";
import {
  getColumn,
  maskMessages,
  openAiToMessages,
  type RowContext,
  strategyOf,
  textMessage,
  validateMessages,
} from "./messages.ts";
import { type DataFiles, loadRows } from "./source.ts";
import type { Message, Row, Sample } from "./types.ts";

/** Column names of a preference row (torchtune's column_map keys). */
export interface PreferenceColumns {
  prompt: string;
  chosen: string;
  rejected: string;
}

/** Options of `preferenceDataset`. */
export interface PreferenceConfig {
  /** Builder name for logs. */
  name: string;
  /** "json" | "csv" | Hugging Face repo id. */
  source: string;
  dataFiles?: DataFiles | null;
  split?: string;
  /** Subfolder of a Hub repo to take data files from (torchtune's data_dir). */
  dataDir?: string | null;
  layout: "chosen_rejected" | "prompt_chosen_rejected";
  columns?: Partial<PreferenceColumns>;
  trainOnInput: boolean;
  newSystemPrompt?: string | null;
  /** Chat format name or "auto" (chat_format.ts); "auto" falls back to "none" (torchtune tokenizes contents without tags). */
  chatFormat?: string;
  /** Truncation length; overrides the recipe's (tokenizer's) value when set. */
  maxSeqLen?: number | null;
}

/** One tokenized preference pair. */
export interface PreferencePair {
  chosen: Sample;
  rejected: Sample;
}

/** The tokenized preference data a recipe trains on. */
export interface PreferenceDataset {
  pairs: PreferencePair[];
  /** Truncation length used, or null. */
  maxSeqLen: number | null;
  padId: number;
  /** Where the rows came from, for logs. */
  source: string;
}

/** What a `preference_dataset` component builds; the recipe calls `load` with its tokenizer. */
export interface PreferenceDatasetBuilder {
  readonly name: string;
  load(tokenizer: Tokenizer, options?: DatasetLoadOptions): Promise<PreferenceDataset>;
}

const DEFAULT_COLUMNS: PreferenceColumns = {
  prompt: "prompt",
  chosen: "chosen",
  rejected: "rejected",
};

function stringColumn(row: Row, column: string, ctx: RowContext, key: string): string {
  const v = getColumn(row, column, ctx, `column_map.${key}`);
  if (typeof v !== "string") {
    throw new TuneError(
      `dataset row ${ctx.index} of ${ctx.source}: column "${column}" must be a string; set dataset.column_map.${key}`,
    );
  }
  return v;
}

function conversation(
  row: Row,
  column: string,
  key: "chosen" | "rejected",
  ctx: RowContext,
  cfg: PreferenceConfig,
): Message[] {
  const v = getColumn(row, column, ctx, `column_map.${key}`);
  if (!Array.isArray(v)) {
    throw new TuneError(
      `dataset row ${ctx.index} of ${ctx.source}: column "${column}" must be a list of {role, content} messages; set dataset.column_map.${key}`,
    );
  }
  return openAiToMessages(row, ctx, {
    column,
    trainOnInput: cfg.trainOnInput,
    newSystemPrompt: cfg.newSystemPrompt,
  });
}

/** The chosen and rejected conversations of one row. */
export function rowToPreferenceMessages(
  row: Row,
  ctx: RowContext,
  cfg: PreferenceConfig,
): { chosen: Message[]; rejected: Message[] } {
  const cols = { ...DEFAULT_COLUMNS, ...cfg.columns };
  if (cfg.layout === "chosen_rejected") {
    return {
      chosen: conversation(row, cols.chosen, "chosen", ctx, cfg),
      rejected: conversation(row, cols.rejected, "rejected", ctx, cfg),
    };
  }
  const prompt = stringColumn(row, cols.prompt, ctx, "prompt");
  const pair = (answer: string) => {
    const messages = [textMessage("user", prompt), textMessage("assistant", answer)];
    if (cfg.newSystemPrompt != null) {
      messages.unshift(textMessage("system", cfg.newSystemPrompt, { masked: true }));
    }
    maskMessages(messages, strategyOf(cfg.trainOnInput));
    return messages;
  };
  return {
    chosen: pair(stringColumn(row, cols.chosen, ctx, "chosen")),
    rejected: pair(stringColumn(row, cols.rejected, ctx, "rejected")),
  };
}

function tokenizePair(
  tokenizer: Tokenizer,
  messages: { chosen: Message[]; rejected: Message[] },
  format: ChatFormat,
  maxSeqLen: number | null,
  ctx: RowContext,
): PreferencePair {
  const one = (m: Message[]) => {
    validateMessages(m, ctx);
    const { tokens, mask } = tokenizeMessages(tokenizer, m, format, { maxSeqLen });
    return sampleFromMask(tokens, mask);
  };
  return { chosen: one(messages.chosen), rejected: one(messages.rejected) };
}

/** A preference dataset builder: rows -> chosen/rejected messages -> tokenized pairs. */
export function preferenceDataset(cfg: PreferenceConfig): PreferenceDatasetBuilder {
  return {
    name: cfg.name,
    async load(tokenizer, options = {}) {
      const maxSeqLen = cfg.maxSeqLen ?? options.maxSeqLen ?? tokenizer.maxSeqLen ?? null;
      if (maxSeqLen !== null && !(Number.isInteger(maxSeqLen) && maxSeqLen >= 2)) {
        throw new TuneError(`max_seq_len must be an integer >= 2, got ${maxSeqLen}`);
      }
      const { rows, label } = await loadRows({
        source: cfg.source,
        dataFiles: cfg.dataFiles,
        split: cfg.split,
        dataDir: cfg.dataDir ?? undefined,
        hub: options.hub,
      });
      const format = resolveChatFormat(cfg.chatFormat ?? "auto", tokenizer, "none");
      const pairs = rows.map((row, index) => {
        const ctx = { source: label, index };
        return tokenizePair(
          tokenizer,
          rowToPreferenceMessages(row, ctx, cfg),
          format,
          maxSeqLen,
          ctx,
        );
      });
      return { pairs, maxSeqLen, padId: tokenizer.padId, source: label };
    },
  };
}
