/**
 * Dataset builders: configuration now, loading and tokenization later when the recipe has
 * its tokenizer. `builder.load(tokenizer, { maxSeqLen })` returns the TokenizedDataset.
 */
import { TuneError } from "../errors.ts";
import type { Tokenizer } from "../tokenizers/types.ts";
import { type ChatFormat, resolveChatFormat, tokenizeMessages } from "./chat_format.ts";
import type { HubOptions } from "../hub/settings.ts";
import { sampleFromMask, textCompletionSample } from "./labels.ts";
import type { TextSampleBy } from "./load_local.ts";
import {
  type AlpacaColumns,
  alpacaToMessages,
  getColumn,
  inputOutputToMessages,
  maskMessages,
  openAiToMessages,
  type RowContext,
  shareGptToMessages,
  validateMessages,
} from "./messages.ts";
import { packSamples } from "./packing.ts";
import { type DataFiles, loadRows } from "./source.ts";
import type { MaskingStrategy, Message, Row, Sample, TokenizedDataset } from "./types.ts";

/** Options of `DatasetBuilder.load`. */
export interface DatasetLoadOptions {
  /**
   * Truncation / pack length from the recipe. Precedence: the dataset's own `maxSeqLen`, then
   * this, then `tokenizer.maxSeqLen` (torchtune keeps it on the tokenizer).
   */
  maxSeqLen?: number | null;
  /** Hub settings (endpoint, token, cache); defaults from the environment. */
  hub?: Partial<HubOptions>;
}

/** What a `dataset` component builds; the recipe calls `load` once it has a tokenizer. */
export interface DatasetBuilder {
  /** Component name, for logs. */
  readonly name: string;
  /** Whether `load` returns packs. */
  readonly packed: boolean;
  /** Load rows, tokenize them (and pack if configured). */
  load(tokenizer: Tokenizer, options?: DatasetLoadOptions): Promise<TokenizedDataset>;
}

/** Where rows come from (shared by every builder). */
export interface SourceConfig {
  /** "json" | "csv" | "text" | Hugging Face repo id. */
  source: string;
  dataFiles?: DataFiles | null;
  /** Split, optionally sliced (default "train"). */
  split?: string;
  /** Truncation / pack length; overrides the recipe's value when set. */
  maxSeqLen?: number | null;
  /** Pack samples into maxSeqLen-long sequences. */
  packed?: boolean;
  /** Packing: split a sample that does not fit across two packs (default false; text completion true). */
  splitAcrossPack?: boolean;
  /** How `.txt` files are cut into samples (default "paragraph"). */
  sampleBy?: TextSampleBy;
  /** Hub datasets: the subset (load_dataset's `name`). */
  subset?: string | null;
}

/** How rows become messages. */
export type MessageTransform =
  | { kind: "alpaca"; columnMap?: Partial<AlpacaColumns> }
  | { kind: "input_output"; columnMap?: Partial<{ input: string; output: string }> }
  | { kind: "sharegpt"; column?: string }
  | { kind: "openai"; column?: string };

/** Options of `sftDataset`. */
export interface SftConfig extends SourceConfig {
  /** Builder name for logs (e.g. torchtune.datasets.alpaca_dataset). */
  name?: string;
  transform: MessageTransform;
  /** Train on the prompt too (torchtune's train_on_input). */
  trainOnInput: boolean;
  /** Overrides train_on_input when set (torchtune's masking_strategy). */
  maskingStrategy?: MaskingStrategy | null;
  /** Prepend this system message (replacing any in the data). */
  newSystemPrompt?: string | null;
  /**
   * Chat format name or "auto" (chat_format.ts). "auto" picks llama3 / chatml from the
   * tokenizer's special tokens, else `fallbackFormat`.
   */
  chatFormat?: string;
  /** The format "auto" falls back to: "none" for instruct data, "plain" for chat data. */
  fallbackFormat?: ChatFormat;
}

/** The dataset's own max_seq_len, else the recipe's, else the tokenizer's (torchtune's place). */
function effectiveMaxSeqLen(
  own: number | null | undefined,
  fromRecipe: number | null | undefined,
  tokenizer: Tokenizer,
) {
  const v = own ?? fromRecipe ?? tokenizer.maxSeqLen ?? null;
  if (v !== null && !(Number.isInteger(v) && v >= 2)) {
    throw new TuneError(`max_seq_len must be an integer >= 2, got ${v}`);
  }
  return v;
}

/**
 * A builder over a row source, named `cfg.name` (default `defaultName`): each load reads the
 * rows, turns each into a sample with the function `sampler` makes for that load (given the
 * tokenizer, max_seq_len and source label), then packs as `cfg` says (`defaultSplitAcross`:
 * whether a sample may straddle two packs when `cfg.splitAcrossPack` is unset).
 */
function rowDataset(
  cfg: SourceConfig & { name?: string },
  defaultName: string,
  defaultSplitAcross: boolean,
  sampler: (
    tokenizer: Tokenizer,
    maxSeqLen: number | null,
    label: string,
  ) => (row: Row, index: number) => Sample,
): DatasetBuilder {
  return {
    name: cfg.name ?? defaultName,
    packed: cfg.packed ?? false,
    async load(tokenizer, options = {}) {
      const { maxSeqLen, rows, label } = await loadSourceRows(cfg, tokenizer, options);
      const toSample = sampler(tokenizer, maxSeqLen, label);
      const samples = rows.map((row, index) => toSample(row, index));
      return finish(samples, cfg, tokenizer, maxSeqLen, label, defaultSplitAcross);
    },
  };
}

/** The prologue every builder shares: its max_seq_len and the rows of its source. */
async function loadSourceRows(
  cfg: SourceConfig,
  tokenizer: Tokenizer,
  options: DatasetLoadOptions,
): Promise<{ maxSeqLen: number | null; rows: Row[]; label: string }> {
  const maxSeqLen = effectiveMaxSeqLen(cfg.maxSeqLen, options.maxSeqLen, tokenizer);
  const { rows, label } = await loadRows({
    source: cfg.source,
    dataFiles: cfg.dataFiles,
    split: cfg.split,
    sampleBy: cfg.sampleBy,
    hub: options.hub,
    subset: cfg.subset ?? undefined,
  });
  return { maxSeqLen, rows, label };
}

function finish(
  samples: Sample[],
  cfg: SourceConfig,
  tokenizer: Tokenizer,
  maxSeqLen: number | null,
  label: string,
  defaultSplitAcross: boolean,
): TokenizedDataset {
  const numRows = samples.length;
  if (cfg.packed) {
    if (maxSeqLen === null) {
      throw new TuneError(
        "dataset.packed=True needs a max_seq_len; set tokenizer.max_seq_len or dataset.max_seq_len",
      );
    }
    samples = packSamples(samples, {
      maxSeqLen,
      padId: tokenizer.padId,
      splitAcrossPack: cfg.splitAcrossPack ?? defaultSplitAcross,
    });
  }
  return {
    samples,
    packed: cfg.packed ?? false,
    maxSeqLen,
    padId: tokenizer.padId,
    source: label,
    numRows,
  };
}

function toMessages(row: Row, ctx: RowContext, cfg: SftConfig): Message[] {
  const common = { trainOnInput: cfg.trainOnInput, newSystemPrompt: cfg.newSystemPrompt };
  const t = cfg.transform;
  let messages: Message[];
  switch (t.kind) {
    case "alpaca":
      messages = alpacaToMessages(row, ctx, {
        columns: t.columnMap,
        trainOnInput: cfg.trainOnInput,
      });
      break;
    case "input_output":
      messages = inputOutputToMessages(row, ctx, { ...common, columns: t.columnMap });
      break;
    case "sharegpt":
      messages = shareGptToMessages(row, ctx, { ...common, column: t.column });
      break;
    case "openai":
      messages = openAiToMessages(row, ctx, { ...common, column: t.column });
      break;
  }
  if (cfg.maskingStrategy) maskMessages(messages, cfg.maskingStrategy);
  return messages;
}

/**
 * Supervised fine-tuning data (instruct or chat): rows -> messages -> tokens and mask in a
 * chat format -> samples with shifted labels (masked messages get -100) -> optional packing.
 */
export function sftDataset(cfg: SftConfig): DatasetBuilder {
  return rowDataset(cfg, "sft_dataset", false, (tokenizer, maxSeqLen, label) => {
    const format = resolveChatFormat(
      cfg.chatFormat ?? "auto",
      tokenizer,
      cfg.fallbackFormat ?? "none",
    );
    return (row, index) => {
      const ctx = { source: label, index };
      const messages = toMessages(row, ctx, cfg);
      validateMessages(messages, ctx);
      const { tokens, mask } = tokenizeMessages(tokenizer, messages, format, { maxSeqLen });
      return sampleFromMask(tokens, mask);
    };
  });
}

/** Options of `textCompletionDataset`. */
export interface TextCompletionConfig extends SourceConfig {
  name?: string;
  /** Column holding the text (default "text"; text files always give "text"). */
  column?: string;
  /** Append EOS to each sample (default true). */
  addEos?: boolean;
}

/**
 * Unstructured text (torchtune's text_completion_dataset): each row's text is encoded with
 * BOS (+ EOS), truncated to max_seq_len - 1 like torchtune, and trained on every token;
 * packing splits samples across packs by default.
 */
export function textCompletionDataset(cfg: TextCompletionConfig): DatasetBuilder {
  const column = cfg.column ?? "text";
  return rowDataset(
    cfg,
    "text_completion_dataset",
    true,
    (tokenizer, maxSeqLen, label) => (row, index) => {
      const text = getColumn(row, column, { source: label, index }, "column");
      if (typeof text !== "string") {
        throw new TuneError(
          `dataset row ${index} of ${label}: column "${column}" must be a string; set dataset.column`,
        );
      }
      return textCompletionSample(tokenizer, text, { addEos: cfg.addEos ?? true, maxSeqLen });
    },
  );
}

/**
 * Load one dataset builder, or a list of them (a config's `dataset:` may be a list, as
 * torchtune's ConcatDataset) concatenated in order. Packed and unpacked builders cannot be mixed.
 */
export async function loadDataset(
  dataset: DatasetBuilder | readonly DatasetBuilder[],
  tokenizer: Tokenizer,
  options: DatasetLoadOptions = {},
): Promise<TokenizedDataset> {
  if (!Array.isArray(dataset)) return await (dataset as DatasetBuilder).load(tokenizer, options);
  const list = dataset as readonly DatasetBuilder[];
  if (list.length === 0) throw new TuneError("dataset is an empty list; give at least one dataset");
  if (new Set(list.map((d) => d.packed)).size > 1) {
    throw new TuneError(
      "dataset list mixes packed and unpacked datasets; set packed the same on each",
    );
  }
  const parts: TokenizedDataset[] = [];
  for (const d of list) parts.push(await d.load(tokenizer, options));
  return {
    samples: parts.flatMap((p) => p.samples),
    packed: parts[0].packed,
    maxSeqLen: parts[0].maxSeqLen,
    padId: tokenizer.padId,
    source: parts.map((p) => p.source).join(" + "),
    numRows: parts.reduce((n, p) => n + p.numRows, 0),
  };
}
