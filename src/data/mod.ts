/**
 * The fine-tuning data pipeline: rows -> messages -> tokens/labels -> (packs) -> batches.
 *
 * ## For recipe writers
 *
 * ```ts
 * import "../src/components.ts";
 * import { instantiate } from "../src/config/instantiate.ts";
 * import { DataLoader, type DatasetBuilder, loadDataset } from "../src/data/mod.ts";
 *
 * // cfg.dataset = { _component_: "torchtune.datasets.alpaca_dataset", packed: false, ... }
 * const dataset = instantiate<DatasetBuilder | DatasetBuilder[]>(cfg.dataset); // config -> builder(s)
 * const ds = await loadDataset(dataset, tokenizer, { maxSeqLen: 512 });       // TokenizedDataset
 * const loader = new DataLoader(ds.samples, {
 *   batchSize: 4, seed: cfg.seed, shuffle: true, padId: ds.padId, rank, worldSize,
 * });
 * for (let epoch = startEpoch; epoch < epochs; epoch++) {
 *   for (const batch of loader.batches(epoch, epoch === startEpoch ? startStep : 0)) {
 *     // batch.tokens, batch.labels: Int32Array (B, T); save {epoch, step: batch.step + 1}
 *   }
 * }
 * ```
 *
 * - Labels are SHIFTED already: `labels[t]` is the target for the logits at `tokens[t]`
 *   (the next token), -100 where ignored (masked prompt, padding, the last position of each
 *   sample, pack boundaries). The loss is plain CE(logits[b, t], labels[b, t]) with
 *   ignore_index -100 and must not shift again. (torchtune's current SFTTransform also
 *   shifts in the dataset.)
 * - `maxSeqLen` truncates each sample as torchtune's tokenizer `max_seq_len` does (the last
 *   kept token becomes EOS for chat/instruct data; text completion keeps max_seq_len - 1
 *   tokens, as torchtune does) and is the pack length when `packed: true`. The dataset
 *   config's own `max_seq_len` wins over the recipe's.
 * - BOS/EOS follow the torchtune tokenizer of each chat format (chat_format.ts).
 * - Shuffling depends only on (seed, epoch), so resuming at (epoch, step) reproduces the
 *   batches bitwise (sampler.ts). Incomplete last batches are dropped.
 * - Hub sources download to ~/.cache/tune/datasets (HF_ENDPOINT, HF_TOKEN,
 *   HF_DATASETS_SERVER, TUNE_DATASETS_CACHE); see hf_hub.ts.
 *
 * Components (components.ts): torchtune.datasets.alpaca_dataset, alpaca_cleaned_dataset,
 * instruct_dataset, chat_dataset, text_completion_dataset.
 */
export { IGNORE_INDEX } from "./types.ts";
export type { MaskingStrategy, Message, Role, Row, Sample, TokenizedDataset } from "./types.ts";
export {
  type DatasetBuilder,
  type DatasetLoadOptions,
  loadDataset,
  type MessageTransform,
  type SftConfig,
  sftDataset,
  type SourceConfig,
  type TextCompletionConfig,
  textCompletionDataset,
} from "./datasets.ts";
export {
  addsDummyPrefix,
  type ChatFormat,
  resolveChatFormat,
  specialTokenId,
  type TokenizedMessages,
  tokenizeMessages,
  truncate,
} from "./chat_format.ts";
export {
  ALPACA_PROMPT_INPUT,
  ALPACA_PROMPT_NO_INPUT,
  alpacaPrompt,
  alpacaToMessages,
  inputOutputToMessages,
  maskMessages,
  openAiToMessages,
  shareGptToMessages,
  textMessage,
  validateMessages,
} from "./messages.ts";
export { sampleFromMask, textCompletionSample } from "./labels.ts";
export { type PackOptions, packSamples } from "./packing.ts";
export { type Batch, type CollateOptions, collatePadded } from "./collate.ts";
export {
  BatchSampler,
  createRng,
  DataLoader,
  type DataLoaderOptions,
  permutation,
  type PositionedBatch,
  type SamplerOptions,
  shuffleInPlace,
} from "./sampler.ts";
export { loadRows, parseSplit, type SourceOptions } from "./source.ts";
export {
  downloadHubDataset,
  type HubOptions,
  hubOptionsFromEnv,
  selectDataFiles,
} from "./hf_hub.ts";
export { loadLocalRows, splitText, type TextSampleBy } from "./load_local.ts";
