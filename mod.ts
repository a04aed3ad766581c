/**
 * tune: torchtune-style LLM fine-tuning in TypeScript on Deno. This module is the public API
 * a recipe is written against; the shipped recipes in recipes/ use the same pieces.
 *
 * A recipe reads top to bottom like torchtune's: `setup()` builds backend, checkpoint, model,
 * tokenizer, optimizer, loss, data and scheduler in that order, then one visible loop trains.
 *
 * ```ts
 * import {
 *   AdamW, clipGradNorm, collatePadded, countTargets, createBackend, createLlama,
 *   FullModelHFCheckpointer, loadTokenizer, LrScheduler, sftDataset,
 * } from "./mod.ts";
 *
 * const backend = await createBackend("cpu");                       // or "cuda"
 * const ck = new FullModelHFCheckpointer({
 *   checkpointDir: "/models/Llama-3.2-1B", checkpointFiles: [], outputDir: "/tmp/run",
 *   modelType: "LLAMA3_2", adapterCheckpoint: null, recipeCheckpoint: null,
 *   resumeFromCheckpoint: false,
 * });
 * const { stateDict, config } = ck.load();                          // q/k rows interleaved
 * const model = createLlama(backend, { name: "llama", config, lora: null }, {
 *   batch: 2, seqLen: 256,
 * });
 * model.loadStateDict(stateDict);
 * const tokenizer = loadTokenizer("/models/Llama-3.2-1B/original/tokenizer.model");
 * const data = await sftDataset({
 *   source: "json", dataFiles: "alpaca.json", transform: { kind: "alpaca" },
 *   trainOnInput: false,
 * }).load(tokenizer, { maxSeqLen: 256 });
 * const opt = new AdamW(backend, model.trainable, { lr: 2e-5, betas: [0.9, 0.95], eps: 1e-8,
 *   weightDecay: 0.01 });
 * const sched = new LrScheduler({ numWarmupSteps: 10, numCycles: 0.5 }, 2e-5, 100);
 * for (let step = 0; step < 100; step++) {
 *   const batch = collatePadded(data.samples.slice(2 * step, 2 * step + 2), {
 *     padId: tokenizer.padId, padTo: 256,
 *   });
 *   model.zeroGrad();
 *   const n = countTargets(batch.labels);
 *   const { lossSum } = model.lossAndBackward(batch.tokens, batch.labels, 1 / n);
 *   clipGradNorm(backend, model.trainable, 1.0);
 *   opt.step(sched.lrAt(step));
 *   console.log(step, lossSum / n);
 * }
 * ck.save({ stateDict: model.stateDict(), epoch: 0 });             // same format as the input
 * ```
 *
 * Components named by `_component_` in YAML configs are registered on import of this module
 * (src/components.ts); `instantiate(section)` builds one from a resolved config section, and
 * `registerComponent()` adds a new one.
 *
 * Layout of state dicts: tune parameter names (see `LlamaConfig`), fp32 host tensors, q/k rows
 * in the interleaved rotary layout after any checkpoint load; writers convert to each format.
 *
 * @module
 */

// Register every built-in `_component_` (models, tokenizers, checkpointers, datasets, optim,
// metric loggers) so `instantiate()` finds them.
import "./src/components.ts";

// ---- errors ----
export { TuneError } from "./src/errors.ts";

// ---- backends ----
export { type BackendOptions, createBackend } from "./src/backend/select.ts";
export {
  type AdamWParams,
  type Backend,
  type Collectives,
  type DeviceBuffer,
  type DType,
  type RopeLayout,
  SingleProcessCollectives,
} from "./src/backend/ops.ts";
export { CpuBackend } from "./src/backend/cpu/backend.ts";

// ---- models ----
export {
  baseLayout,
  createLlama,
  LlamaModel,
  type LlamaOptions,
  loraLayout,
  loraSites,
  type LossResult,
  type MemoryReport,
  randomBaseWeights,
} from "./src/models/llama/mod.ts";
export { headSize, type LlamaConfig, type RopeScaling } from "./src/models/llama/config.ts";
export type { LoraAttnModule, LoraConfig, ModelSpec } from "./src/models/model_spec.ts";
export {
  checkConfig,
  familyComponentName,
  llama,
  // options of the generic `llama()` builder (torchtune's llama2 component builder)
  type LlamaOptions as LlamaBuilderOptions,
  type LoraArgs,
  loraConfig,
  loraParamShapes,
  MODEL_FAMILIES,
  type ModelFamilyEntry,
  parameterCount,
  paramShapes,
  scaleHiddenDimForMlp,
} from "./src/models/builders/mod.ts";
export { ParamStore } from "./src/params/store.ts";
export type { ParamLayout } from "./src/params/layout.ts";
export type { SeededRandom } from "./src/params/random.ts";
export type { LinearSite } from "./src/models/llama/layout.ts";

// ---- optimizer, scheduler, clipping, loss ----
export {
  AdamW,
  ADAMW_DEFAULTS,
  type AdamWOptions,
  type AdamWState,
  exportAdamWState,
  importAdamWState,
  validateAdamW,
} from "./src/optim/adamw.ts";
export { cosineMultiplier, type CosineWithWarmup, LrScheduler } from "./src/optim/lr_schedule.ts";
export { clipGradNorm } from "./src/optim/clip.ts";
export { type CrossEntropyLoss, prepareLabels } from "./src/optim/loss.ts";

// ---- checkpoints: checkpointers, HF/Meta/llama2.c formats, safetensors, PEFT ----
export * from "./src/checkpoint/mod.ts";
export { type HostTensor, numel, type StateDict } from "./src/params/state_dict.ts";
export type { HfLoaded, HfSaveOptions } from "./src/checkpoint/hf_checkpoint.ts";
export type { ModelType } from "./src/checkpoint/hf_config.ts";
export type { FunctionCheckpointer } from "./src/checkpoint/checkpointer.ts";
export type { SafetensorsHeader, WriteDtype } from "./src/checkpoint/safetensors.ts";
export type { FileDtype } from "./src/checkpoint/dtype.ts";

// ---- tokenizers ----
export * from "./src/tokenizers/mod.ts";

// ---- data: datasets, chat formats, templates, collate, packing, DataLoader ----
export * from "./src/data/mod.ts";
export type { TokenizeMessagesOptions } from "./src/data/chat_format.ts";
export type { AlpacaColumns, RowContext } from "./src/data/messages.ts";
export type { DataFiles, LoadedRows, SplitSpec } from "./src/data/source.ts";
export type { Rng } from "./src/data/sampler.ts";
export type { HubDataFiles } from "./src/hub/mod.ts";
export type { LocalFormat, LocalLoadOptions } from "./src/data/load_local.ts";

// ---- config: YAML + overrides, typed schemas, component registry ----
export { instantiate } from "./src/config/instantiate.ts";
export {
  allComponentNames,
  componentsOfKind,
  findComponent,
  registerComponent,
} from "./src/config/registry.ts";
export type {
  ComponentKind,
  ComponentSection,
  ComponentSpec,
  ParamSchema,
  ParamSpec,
  ParamValue,
  ResolvedConfig,
} from "./src/config/schema.ts";
export { loadMerged, loadRecipeConfig, type MergedConfig } from "./src/config/load.ts";
export type { ConfigTree } from "./src/config/yaml.ts";
export type { ConfigSource } from "./src/config/shipped.ts";
export { applyOverrides, type Override, parseOverrides } from "./src/config/overrides.ts";
export {
  defaultLaunchOptions,
  type LaunchOptions,
  type RecipeDefinition,
} from "./src/config/recipe.ts";

// ---- training helpers: logging, progress, loss plot, checkpointing, steps ----
export {
  DiskLogger,
  formatMetric,
  type MetricLogger,
  type MetricValue,
  readMetrics,
  StdoutLogger,
} from "./src/training/metric_logging.ts";
export { ProgressBar } from "./src/training/progress.ts";
export { lossCurveSvg, type LossPoint } from "./src/training/loss_plot.ts";
export { RunLog, type RunLogOptions, type StepMetrics } from "./src/training/run_log.ts";
export {
  type HostMoments,
  loadRecipeStateFor,
  recipeStateMoments,
  restoreTrainingState,
  type SaveCheckpointOptions,
  saveTrainingCheckpoint,
  type TrainingProgress,
  trainingRecipeState,
} from "./src/training/checkpointing.ts";
export { checkFiniteLoss } from "./src/training/nan_guard.ts";
export { resolveSeed } from "./src/training/seed.ts";
export { countTargets, modelDtypes, stepsPerEpoch } from "./src/training/steps.ts";
export { type DataSetupOptions, setupData, type TrainingData } from "./src/training/data.ts";
export type { FinetuneHooks, FinetuneResult } from "./src/training/recipe_api.ts";
export { type DistributedRuntime, setupDistributed } from "./src/training/sharded_setup.ts";
export { ShardedOptimizer, type ShardReport } from "./src/training/sharded.ts";

// ---- generation ----
export * from "./src/generation/mod.ts";

// ---- distributed: process groups, collectives, launcher, sharding ----
export * from "./src/distributed/mod.ts";
