/**
 * Every parameter's name and shape for a Llama-family config (and LoRA settings), computed
 * from the config alone: the basis of `parameterCount` and of checkpoint shape checks.
 * The one table of names and shapes is the model's layout (llama/layout.ts); these are its
 * entries as maps.
 */
import type { LlamaConfig } from "../llama/config.ts";
import { baseLayout, loraLayout } from "../llama/layout.ts";
import type { LoraConfig } from "../model_spec.ts";
import type { ParamLayout } from "../../params/layout.ts";

function shapes(layout: ParamLayout): Map<string, number[]> {
  return new Map(layout.entries.map((e) => [e.name, [...e.shape]]));
}

/** Names and shapes of the base model's parameters, in layout order. */
export function paramShapes(cfg: LlamaConfig): Map<string, number[]> {
  return shapes(baseLayout(cfg));
}

/**
 * Names and shapes of the adapter parameters: `<linear>.lora_a.weight` (r, in),
 * `.lora_b.weight` (out, r), and with DoRA `.magnitude` (out).
 */
export function loraParamShapes(cfg: LlamaConfig, lora: LoraConfig): Map<string, number[]> {
  return shapes(loraLayout(cfg, lora));
}
