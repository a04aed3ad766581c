/**
 * Export: tune's models as GGUF (llama.cpp, Ollama, LM Studio) and back.
 *
 * ```ts
 * const m = loadModelFolder("out/epoch_0");            // HF, Meta or llama2.c folder
 * exportGguf("model.gguf", m.stateDict, m.config, {
 *   family: m.family,                                  // llama.cpp names (gguf_families.ts)
 *   dtype: "q8_0",                                     // f32 | f16 | bf16 | q8_0
 *   tokenizer: tokenizerMetadata("out/epoch_0", m.config.vocabSize, m.family.bpePre),
 *   name: "my-model",
 * });
 * const back = importGguf("model.gguf");               // tune names, q/k interleaved
 * ```
 *
 * The command is `tune export gguf|hf` (command.ts); `checkpointer.output_format: gguf` is
 * registered by components.ts.
 *
 * @module
 */
export { exportGguf, type GgufDtype, type GgufExportOptions } from "./gguf_export.ts";
export { type GgufModel, importGguf } from "./gguf_import.ts";
export { GGUF_FAMILIES, type GgufFamily } from "./gguf_families.ts";
export { readGgufHeader, writeGguf } from "./gguf_file.ts";
export { dequantizeQ8_0, quantizeQ8_0 } from "./ggml_types.ts";
export { tokenizerMetadata } from "./gguf_tokenizer.ts";
export { writeGgufTokenizer } from "./gguf_tokenizer_files.ts";
export { loadModelFolder } from "./model_folder.ts";
