/**
 * `_component_` builders of src/data, registered with src/config/registry.ts.
 * Imported (for its side effect) by src/components.ts.
 *
 * Each builds a `DatasetBuilder` (datasets.ts); the recipe then calls
 * `await dataset.load(tokenizer, { maxSeqLen })`.
 */
import { registerComponent } from "../config/registry.ts";
import type { ParamSchema, ParamSpec } from "../config/schema.ts";
import { TuneError } from "../errors.ts";
import { CHAT_FORMAT_CHOICES } from "./chat_format.ts";
import {
  type DatasetBuilder,
  type MessageTransform,
  sftDataset,
  textCompletionDataset,
} from "./datasets.ts";
import type { TextSampleBy } from "./load_local.ts";
import {
  type PreferenceConfig,
  preferenceDataset,
  type PreferenceDatasetBuilder,
} from "./preference.ts";
import type { DataFiles } from "./source.ts";
import type { MaskingStrategy } from "./types.ts";

const SOURCE_DOC = "Hugging Face repo id (owner/name), or json | csv | text for local data_files";

const common: ParamSchema = {
  data_files: {
    type: "any",
    default: null,
    doc: "local file path, list of paths, or {split: path(s)}; read with source json|csv|text",
  },
  split: {
    type: "string",
    default: "train",
    doc: "split, optionally sliced: train[:1000], train[:10%]",
  },
  subset: {
    type: "string",
    default: null,
    doc: "Hugging Face subset (load_dataset's name), e.g. wikitext-103-v1",
  },
  packed: { type: "bool", default: false, doc: "pack samples into max_seq_len-long sequences" },
  max_seq_len: {
    type: "int",
    default: null,
    doc: "truncation/pack length; overrides the recipe's (tokenizer's) max_seq_len",
  },
};

const sftCommon: ParamSchema = {
  ...common,
  chat_format: {
    type: "string",
    default: "auto",
    choices: CHAT_FORMAT_CHOICES,
    doc:
      "how messages become tokens: auto | none | plain | llama2 | llama3 | chatml | phi3 | mistral | chatml_template | hf",
  },
  template: {
    type: "string",
    default: null,
    choices: CHAT_FORMAT_CHOICES,
    doc: "another name for chat_format (e.g. torchtune.models.llama2.Llama2ChatTemplate)",
  },
  masking_strategy: {
    type: "string",
    default: null,
    choices: ["train_on_all", "train_on_assistant", "train_on_last"],
    doc: "which messages get loss; overrides train_on_input when set",
  },
  split_across_pack: {
    type: "bool",
    default: false,
    doc: "packing: split a sample that does not fit across two packs",
  },
};

function dataFilesArg(v: unknown): DataFiles | null {
  if (v === null || v === undefined) return null;
  if (typeof v === "string") return v;
  if (Array.isArray(v) && v.every((x) => typeof x === "string")) return v as string[];
  if (typeof v === "object" && !Array.isArray(v)) {
    const ok = Object.values(v as object).every((x) =>
      typeof x === "string" || (Array.isArray(x) && x.every((y) => typeof y === "string"))
    );
    if (ok) return v as Record<string, string | string[]>;
  }
  throw new TuneError(
    `dataset.data_files must be a path, a list of paths or {split: path}, got ${JSON.stringify(v)}`,
  );
}

function columnMapArg<K extends string>(
  v: unknown,
  keys: readonly K[],
): Partial<Record<K, string>> | undefined {
  if (v === null || v === undefined) return undefined;
  if (typeof v !== "object" || Array.isArray(v)) {
    throw new TuneError(`dataset.column_map must be a mapping like {${keys[0]}: my_column}`);
  }
  for (const [k, col] of Object.entries(v as Record<string, unknown>)) {
    if (!(keys as readonly string[]).includes(k)) {
      throw new TuneError(
        `dataset.column_map has unknown key ${k}; its keys are ${keys.join(", ")}`,
      );
    }
    if (typeof col !== "string") {
      throw new TuneError(
        `dataset.column_map.${k} must be a column name, got ${JSON.stringify(col)}`,
      );
    }
  }
  return v as Partial<Record<K, string>>;
}

/** The `column_map` key of a builder whose columns are `keys` (`columns`: the default renames). */
function columnMapParam(keys: readonly string[], columns: unknown = null): ParamSpec {
  return {
    type: "any",
    default: columns,
    doc: `rename columns: {${keys.map((k) => `${k}: col`).join(", ")}}`,
  };
}

const ALPACA_COLUMNS = ["instruction", "input", "output"] as const;
const INPUT_OUTPUT_COLUMNS = ["input", "output"] as const;
const CHOSEN_REJECTED_COLUMNS = ["chosen", "rejected"] as const;
const PROMPT_CHOSEN_REJECTED_COLUMNS = ["prompt", "chosen", "rejected"] as const;

/** The `new_system_prompt` key of the conversation builders. */
const REPLACE_SYSTEM_PROMPT: ParamSpec = {
  type: "string",
  default: null,
  doc: "replace system messages with this one",
};

/** `template` is another name for `chat_format`; giving both with different values is an error. */
function chatFormatArg(args: Record<string, unknown>): string {
  const format = str(args.chat_format) ?? "auto";
  const template = str(args.template);
  if (template === null) return format;
  if (format !== "auto" && format !== template) {
    throw new TuneError(
      `dataset.chat_format=${format} and dataset.template=${template} disagree; set only one`,
    );
  }
  return template;
}

function str(v: unknown): string | null {
  return v === null || v === undefined ? null : String(v);
}

function num(v: unknown): number | null {
  return v === null || v === undefined ? null : Number(v);
}

/** The source keys every SFT/text builder shares, parsed. */
function sourceArgs(args: Record<string, unknown>) {
  return {
    source: str(args.source) ?? "",
    dataFiles: dataFilesArg(args.data_files),
    split: String(args.split ?? "train"),
    subset: str(args.subset),
    packed: Boolean(args.packed),
    maxSeqLen: num(args.max_seq_len),
  };
}

/** The message keys of SFT builders, parsed. */
function sftArgs(args: Record<string, unknown>, fallbackFormat: "none" | "plain") {
  return {
    splitAcrossPack: Boolean(args.split_across_pack),
    trainOnInput: Boolean(args.train_on_input),
    maskingStrategy: str(args.masking_strategy) as MaskingStrategy | null,
    newSystemPrompt: str(args.new_system_prompt),
    chatFormat: chatFormatArg(args),
    fallbackFormat,
  };
}

/**
 * Register the dataset builder `torchtune.datasets.<short>` (alias `tune.datasets.<short>`);
 * `builder` gets that full name and the config's keys.
 */
function registerDataset(
  short: string,
  doc: string,
  params: ParamSchema,
  builder: (name: string, args: Record<string, unknown>) => DatasetBuilder,
): void {
  const name = `torchtune.datasets.${short}`;
  registerComponent<DatasetBuilder>({
    name,
    aliases: [`tune.datasets.${short}`],
    kind: "dataset",
    doc,
    params,
    build: (args) => builder(name, args),
  });
}

/** The config of an SFT builder `name`: its source and message keys, and `transform`. */
function sftConfig(name: string, args: Record<string, unknown>, transform: MessageTransform) {
  return { name, ...sourceArgs(args), ...sftArgs(args, "none"), transform };
}

function alpacaBuilder(name: string, args: Record<string, unknown>): DatasetBuilder {
  const columnMap = columnMapArg(args.column_map, ALPACA_COLUMNS);
  return sftDataset({
    ...sftConfig(name, args, { kind: "alpaca", columnMap }),
    newSystemPrompt: null,
  });
}

const alpacaParams = (source: string): ParamSchema => ({
  source: { type: "string", default: source, doc: SOURCE_DOC },
  column_map: columnMapParam(ALPACA_COLUMNS),
  train_on_input: {
    type: "bool",
    default: true,
    doc: "also train on the prompt (Alpaca default true)",
  },
  ...sftCommon,
});

registerDataset(
  "alpaca_dataset",
  "Alpaca instruction data (instruction, input, output) with the Alpaca prompt",
  alpacaParams("tatsu-lab/alpaca"),
  alpacaBuilder,
);

registerDataset(
  "alpaca_cleaned_dataset",
  "yahma/alpaca-cleaned with the Alpaca prompt",
  alpacaParams("yahma/alpaca-cleaned"),
  alpacaBuilder,
);

/** input/output pairs (torchtune's InputOutputToMessages), with default source and columns. */
function inputOutputBuilder(name: string, args: Record<string, unknown>): DatasetBuilder {
  const columnMap = columnMapArg(args.column_map, INPUT_OUTPUT_COLUMNS);
  return sftDataset(sftConfig(name, args, { kind: "input_output", columnMap }));
}

const inputOutputParams = (source: ParamSpec, columns: unknown): ParamSchema => ({
  source,
  column_map: columnMapParam(INPUT_OUTPUT_COLUMNS, columns),
  train_on_input: { type: "bool", default: false, doc: "also train on the prompt" },
  new_system_prompt: { type: "string", default: null, doc: "prepend this system message" },
  ...sftCommon,
});

registerDataset(
  "instruct_dataset",
  "prompt/response pairs (input, output columns; rename with column_map)",
  inputOutputParams({ type: "string", required: true, doc: SOURCE_DOC }, null),
  inputOutputBuilder,
);

registerDataset(
  "samsum_dataset",
  "dialogue summarisation (Samsung/samsum: dialogue -> summary); pair with " +
    "tokenizer.prompt_template=torchtune.data.SummarizeTemplate",
  inputOutputParams(
    { type: "string", default: "Samsung/samsum", doc: SOURCE_DOC },
    { input: "dialogue", output: "summary" },
  ),
  inputOutputBuilder,
);

registerDataset(
  "grammar_dataset",
  "grammar correction (liweili/c4_200m: input -> output); pair with " +
    "tokenizer.prompt_template=torchtune.data.GrammarErrorCorrectionTemplate",
  inputOutputParams(
    { type: "string", default: "liweili/c4_200m", doc: SOURCE_DOC },
    null,
  ),
  inputOutputBuilder,
);

/** The keys of the conversation (ShareGPT/OpenAI) builders past source and style. */
const conversationCommon: ParamSchema = {
  train_on_input: { type: "bool", default: false, doc: "also train on user messages" },
  new_system_prompt: REPLACE_SYSTEM_PROMPT,
  ...sftCommon,
};

registerDataset(
  "chat_dataset",
  "conversations: ShareGPT (from/value) or OpenAI (role/content) messages",
  {
    source: { type: "string", required: true, doc: SOURCE_DOC },
    conversation_style: {
      type: "string",
      required: true,
      choices: ["sharegpt", "openai"],
      doc: "sharegpt: [{from: human|gpt|system, value}]; openai: [{role, content}]",
    },
    conversation_column: {
      type: "string",
      default: null,
      doc: "column holding the messages (default conversations for sharegpt, messages for openai)",
    },
    ...conversationCommon,
  },
  (name, args) => {
    const style = String(args.conversation_style);
    if (style !== "sharegpt" && style !== "openai") {
      throw new TuneError(`dataset.conversation_style must be sharegpt or openai, got ${style}`);
    }
    const transform: MessageTransform = style === "sharegpt"
      ? { kind: "sharegpt", column: str(args.conversation_column) ?? "conversations" }
      : { kind: "openai", column: str(args.conversation_column) ?? "messages" };
    return sftDataset(sftConfig(name, args, transform));
  },
);

registerDataset(
  "slimorca_dataset",
  "Open-Orca/SlimOrca-Dedup: ShareGPT conversations in a conversations column",
  {
    source: { type: "string", default: "Open-Orca/SlimOrca-Dedup", doc: SOURCE_DOC },
    ...conversationCommon,
  },
  (name, args) => sftDataset(sftConfig(name, args, { kind: "sharegpt", column: "conversations" })),
);

/** Unstructured text (torchtune's TextCompletionDataset), with default source and column. */
function textBuilder(name: string, args: Record<string, unknown>): DatasetBuilder {
  return textCompletionDataset({
    name,
    ...sourceArgs(args),
    splitAcrossPack: args.split_across_pack === undefined ? true : Boolean(args.split_across_pack),
    column: String(args.column ?? "text"),
    addEos: args.add_eos === undefined ? true : Boolean(args.add_eos),
    sampleBy: String(args.sample_by ?? "paragraph") as TextSampleBy,
  });
}

const textParams = (source: ParamSpec, column: string, subset: string | null): ParamSchema => ({
  source,
  column: { type: "string", default: column, doc: "column holding the text" },
  add_eos: { type: "bool", default: true, doc: "append EOS to each sample" },
  sample_by: {
    type: "string",
    default: "paragraph",
    choices: ["paragraph", "document", "line"],
    doc: ".txt files: one sample per blank-line-separated paragraph, per file, or per line",
  },
  ...common,
  subset: { ...common.subset, default: subset } as ParamSpec,
  split_across_pack: {
    type: "bool",
    default: true,
    doc: "packing: split a sample that does not fit across two packs",
  },
});

// source not required at validation so configs can be checked before one is chosen;
// loading without one is a one-line TuneError
registerDataset(
  "text_completion_dataset",
  "unstructured text (txt files or a text column), trained on every token",
  textParams({ type: "string", default: null, doc: SOURCE_DOC }, "text", null),
  textBuilder,
);

registerDataset(
  "wikitext_dataset",
  "Wikipedia articles (EleutherAI/wikitext_document_level, page column), text completion",
  textParams(
    { type: "string", default: "EleutherAI/wikitext_document_level", doc: SOURCE_DOC },
    "page",
    "wikitext-103-v1",
  ),
  textBuilder,
);

registerDataset(
  "cnn_dailymail_articles_dataset",
  "news articles (ccdv/cnn_dailymail 3.0.0, article column), text completion",
  textParams(
    { type: "string", default: "ccdv/cnn_dailymail", doc: SOURCE_DOC },
    "article",
    "3.0.0",
  ),
  textBuilder,
);

// ---- preference data (DPO): builders of kind preference_dataset ----

const preferenceCommon: ParamSchema = {
  data_files: common.data_files,
  split: common.split,
  max_seq_len: common.max_seq_len,
  chat_format: sftCommon.chat_format,
  template: sftCommon.template,
  train_on_input: { type: "bool", default: false, doc: "also train on the prompt messages" },
  new_system_prompt: REPLACE_SYSTEM_PROMPT,
};

function preferenceBuilder(
  name: string,
  layout: PreferenceConfig["layout"],
  args: Record<string, unknown>,
): PreferenceDatasetBuilder {
  const keys = layout === "chosen_rejected"
    ? CHOSEN_REJECTED_COLUMNS
    : PROMPT_CHOSEN_REJECTED_COLUMNS;
  return preferenceDataset({
    name,
    source: String(args.source),
    dataFiles: dataFilesArg(args.data_files),
    split: String(args.split ?? "train"),
    dataDir: str(args.data_dir),
    layout,
    columns: columnMapArg(args.column_map, keys),
    trainOnInput: Boolean(args.train_on_input),
    newSystemPrompt: str(args.new_system_prompt),
    chatFormat: chatFormatArg(args),
    maxSeqLen: num(args.max_seq_len),
  });
}

registerComponent<PreferenceDatasetBuilder>({
  name: "torchtune.datasets.preference_dataset",
  aliases: ["tune.datasets.preference_dataset"],
  kind: "preference_dataset",
  doc: "pairs of conversations: chosen and rejected columns of [{role, content}] messages",
  params: {
    source: { type: "string", required: true, doc: SOURCE_DOC },
    column_map: columnMapParam(CHOSEN_REJECTED_COLUMNS),
    ...preferenceCommon,
  },
  build: (args) =>
    preferenceBuilder("torchtune.datasets.preference_dataset", "chosen_rejected", args),
});

registerComponent<PreferenceDatasetBuilder>({
  name: "torchtune.datasets.stack_exchange_paired_dataset",
  aliases: [
    "torchtune.datasets.stack_exchanged_paired_dataset",
    "tune.datasets.stack_exchange_paired_dataset",
  ],
  kind: "preference_dataset",
  doc: "question / better answer / worse answer string columns (lvwerra/stack-exchange-paired)",
  params: {
    source: { type: "string", default: "lvwerra/stack-exchange-paired", doc: SOURCE_DOC },
    column_map: columnMapParam(PROMPT_CHOSEN_REJECTED_COLUMNS, {
      prompt: "question",
      chosen: "response_j",
      rejected: "response_k",
    }),
    data_dir: {
      type: "string",
      default: "data/rl",
      doc: "Hub datasets: take data files from this folder of the repo",
    },
    ...preferenceCommon,
  },
  build: (args) =>
    preferenceBuilder(
      "torchtune.datasets.stack_exchange_paired_dataset",
      "prompt_chosen_rejected",
      args,
    ),
});

registerComponent<PreferenceDatasetBuilder>({
  name: "torchtune.datasets.hh_rlhf_helpful_dataset",
  aliases: ["tune.datasets.hh_rlhf_helpful_dataset"],
  kind: "preference_dataset",
  doc: "Anthropic HH-RLHF helpful pairs (RLHFlow/HH-RLHF-Helpful-standard: chosen, rejected)",
  params: {
    source: { type: "string", default: "RLHFlow/HH-RLHF-Helpful-standard", doc: SOURCE_DOC },
    column_map: columnMapParam(CHOSEN_REJECTED_COLUMNS),
    ...preferenceCommon,
  },
  build: (args) =>
    preferenceBuilder("torchtune.datasets.hh_rlhf_helpful_dataset", "chosen_rejected", args),
});
