/**
 * The fine-tuning data pipeline: rows -> messages -> tokens/labels -> (packs) -> batches.
 *
 * ## For recipe writers
 *
 * ```ts
 * import { instantiate } from "../src/config/instantiate.ts";
 * import { DataLoader, type DatasetBuilder, loadDataset } from "../src/data/mod.ts";
 *
 * // cfg.dataset: one resolved `_component_` section, or a list of them (concatenated).
 * const sections = Array.isArray(cfg.dataset) ? cfg.dataset : [cfg.dataset];
 * const builders = sections.map((s) => instantiate<DatasetBuilder>(s));
 * const ds = await loadDataset(builders, tokenizer, { maxSeqLen }); // TokenizedDataset
 * const loader = new DataLoader(ds.samples, {
 *   batchSize: cfg.batch_size, seed: cfg.seed, shuffle: cfg.shuffle, padId: ds.padId,
 *   rank, worldSize, // each rank gets its DistributedSampler-style share
 * });
 * for (let epoch = startEpoch; epoch < cfg.epochs; epoch++) {
 *   for (const batch of loader.batches(epoch, epoch === startEpoch ? startStep : 0)) {
 *     // batch.tokens, batch.labels: Int32Array (B, T) with T = batch.seqLen.
 *     // Checkpoint {epoch, step: batch.step + 1} (roll over to epoch + 1 at the end).
 *   }
 * }
 * // Evaluation: new DataLoader(ds.samples, { ..., shuffle: false, dropLast: false }).
 * ```
 *
 * - Labels are SHIFTED already: `labels[t]` is the target for the logits at `tokens[t]`
 *   (the next token), -100 where ignored (masked prompt, padding, the last position of each
 *   sample, pack boundaries). The loss is plain CE(logits[b, t], labels[b, t]) with
 *   ignore_index -100 and must NOT shift again. (torchtune's current SFTTransform shifts in
 *   the dataset the same way.)
 * - max_seq_len precedence: the dataset section's `max_seq_len`, then `loadDataset`'s
 *   `maxSeqLen`, then `tokenizer.maxSeqLen`. It truncates each sample as torchtune's
 *   tokenizer does (chat/instruct: the last kept token becomes EOS; text completion keeps
 *   max_seq_len - 1 tokens) and is the pack length when `packed: true`.
 * - Message formats (`chat_format`, alias `template`): auto | none | plain | llama2 | llama3 |
 *   chatml | phi3 | mistral | chatml_template | hf; BOS/EOS as the matching torchtune tokenizer
 *   (chat_format.ts). "auto" picks the format of the tokenizer's special tokens (llama3, chatml,
 *   phi3), or the checkpoint's Jinja template (hf_chat.ts) when `tokenizer.chat_template` is set
 *   or nothing built-in fits, else none (contents only, as torchtune).
 * - Packs (packing.ts) carry `inputPos` / `seqLens`; collation turns them into positions
 *   and segment ids, and the model attends block-causally (samples of a pack never see
 *   each other, positions restart per sample), as torchtune.
 * - Shuffling depends only on (seed, epoch), so resuming at (epoch, step) reproduces the
 *   batches bitwise (sampler.ts). Training loaders drop the incomplete last batch.
 * - Hub sources download to ~/.cache/tune/datasets (HF_ENDPOINT, HF_TOKEN,
 *   HF_DATASETS_SERVER, TUNE_DATASETS_CACHE, HF_HUB_OFFLINE); see src/hub/. Local data:
 *   `source: json|csv|text` + `data_files`; .txt files split at blank lines by default.
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
export { type HfMessage, renderChat, toHfMessages, tokenizeHfChat } from "./hf_chat.ts";
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
} from "../hub/mod.ts";
export { loadLocalRows, splitText, type TextSampleBy } from "./load_local.ts";
