/** Model builders: generic `llama`, the published families, LoRA settings, parameter counts. */
export { checkConfig, llama, type LlamaOptions, scaleHiddenDimForMlp } from "./llama.ts";
export { familyComponentName, MODEL_FAMILIES, type ModelFamilyEntry } from "./families.ts";
export { type LoraArgs, loraConfig } from "./lora.ts";
export { parameterCount } from "./parameter_count.ts";
export { loraParamShapes, paramShapes } from "./param_shapes.ts";
