/** Parameter counts from a model spec's config alone (no weights allocated). */
import type { ModelSpec } from "../model_spec.ts";
import { loraParamShapes, paramShapes } from "./param_shapes.ts";

function total(shapes: Map<string, number[]>): number {
  let n = 0;
  for (const s of shapes.values()) n += s.reduce((a, b) => a * b, 1);
  return n;
}

/**
 * Number of parameters of `spec`: `base` (the model), `lora` (adapter parameters, 0 without
 * LoRA) and `total`. Tied embeddings count once, as published model cards do.
 */
export function parameterCount(spec: ModelSpec): { base: number; lora: number; total: number } {
  const base = total(paramShapes(spec.config));
  const lora = spec.lora ? total(loraParamShapes(spec.config, spec.lora)) : 0;
  return { base, lora, total: base + lora };
}
