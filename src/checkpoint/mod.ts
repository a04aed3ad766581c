/**
 * Checkpoints: loading and saving model weights, LoRA adapters and recipe state in the
 * formats ML engineers use (Hugging Face safetensors, PEFT, Meta .pth, llama2.c .bin).
 *
 * The API recipes use:
 *
 * ```ts
 * const ck = instantiate<Checkpointer>(cfg.checkpointer);    // a registered checkpointer
 * const { stateDict, config, adapter, recipeState } = ck.load({
 *   resumeFromCheckpoint: cfg.resume_from_checkpoint,         // recipe's top-level flag
 * });
 * checkSameArchitecture(spec.config, config, "checkpointer"); // builder vs files
 * const model = createLlama(backend, { ...spec, config: { ...spec.config, ropeLayout: config.ropeLayout } }, ...);
 * model.loadStateDict(stateDict);                             // + adapters if `adapter`
 * // ... train; when resuming, restore step/epoch/seed/dataPosition/lrScheduler/rng/tensors
 * ck.save({
 *   stateDict: model.mergedStateDict(),                       // omit for adapter-only saves
 *   adapter: spec.lora ? { stateDict: model.adapterStateDict(), lora: spec.lora } : undefined,
 *   recipeState: { step, epoch, seed, dataPosition, lrScheduler, rng, tensors: moments },
 *   epoch,
 * });                                                         // -> <output_dir>/epoch_<epoch>
 * ```
 *
 * Output layout: `<output_dir>/epoch_<N>/` holds the weights in the input's format (same
 * file names and shard layout for Hugging Face, plus the input's tokenizer and generation
 * files) and `adapter_model.safetensors` + `adapter_config.json` for LoRA runs (LoRA
 * `step_<N>/` folders: the adapter only); `keep_last_n_checkpoints` prunes older folders;
 * `<output_dir>/recipe_state/` holds the latest recipe state. Every file goes to a temporary
 * name and is renamed into place, and every folder is staged and renamed once complete.
 *
 * @module
 */
export {
  type Checkpointer,
  type CheckpointerOptions,
  expandCheckpointFiles,
  FullModelHFCheckpointer,
  FullModelMetaCheckpointer,
  type LoadedCheckpoint,
  type LoadOptions,
  loraSavesMergedModel,
  registerOutputFormat,
  type SaveRequest,
} from "./checkpointer.ts";
export { copyLoaderFiles, findTokenizerFile, HF_LOADER_FILES } from "./hf_folder.ts";
export { Llama2cCheckpointer } from "./llama2c_checkpointer.ts";
export { loadHfCheckpoint, saveHfCheckpoint } from "./hf_checkpoint.ts";
export { loadMetaCheckpoint, saveMetaCheckpoint } from "./meta_checkpoint.ts";
export { loadPeftAdapter, mergeLora, peftAdapterConfig, savePeftAdapter } from "./peft.ts";
export { loadRecipeState, type RecipeState, saveRecipeState } from "./recipe_state.ts";
export { atomicWrite, atomicWriteWith } from "./atomic_write.ts";
export { convertRopeLayout, halfToInterleaved, interleavedToHalf } from "./rope_permute.ts";
export { readSafetensors, readSafetensorsHeader, writeSafetensors } from "./safetensors.ts";
export { PthReader, readPth, writePth } from "./torch_pth.ts";
export { checkSameArchitecture, validateStateDict } from "./validate.ts";
