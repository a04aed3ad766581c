/**
 * torchtune's QLoRA builders, `torchtune.models.<family>.qlora_<model>`: the LoRA builder of
 * the same model with `quantize_base=True` (every decoder linear's base weight in NF4, see
 * src/quant/). Registered for each family tune has where torchtune has a qlora_ builder
 * (Llama 2, 3, 3.1, 3.2, 3.3, Mistral, Phi-3, Phi-4, Gemma, Gemma 2); torchtune has none for Qwen. Imported
 * (for its side effect) by src/components.ts after src/models/components.ts.
 */
import { registerComponent } from "../../config/registry.ts";
import { LORA_PARAMS } from "../components.ts";
import type { ModelSpec } from "../model_spec.ts";
import { familyComponentName, MODEL_FAMILIES } from "./families.ts";
import { type LoraArgs, loraConfig } from "./lora.ts";

/** torchtune modules that have qlora_ builders. */
export const QLORA_MODULES: ReadonlySet<string> = new Set([
  "llama2",
  "llama3",
  "llama3_1",
  "llama3_2",
  "mistral",
  "phi3",
  "gemma",
  "gemma2",
  "phi4",
]);

/** torchtune's other names of a qlora_ builder (llama3_3's 70B is llama3_1's). */
const QLORA_ALIASES: Record<string, string[]> = {
  llama3_1_70b: ["torchtune.models.llama3_3.qlora_llama3_3_70b"],
};

for (const f of MODEL_FAMILIES) {
  if (!QLORA_MODULES.has(f.module)) continue;
  registerComponent<ModelSpec>({
    name: familyComponentName(f, true).replace(/\.lora_([^.]+)$/, ".qlora_$1"),
    aliases: QLORA_ALIASES[f.name],
    kind: "model",
    doc: `${f.name} with LoRA adapters over an NF4 base (QLoRA)`,
    params: {
      ...LORA_PARAMS,
      quantize_base: {
        type: "bool",
        default: true,
        doc: "keep every decoder linear's base weight in NF4 (set False for plain LoRA)",
      },
    },
    build: (a) => {
      const config = f.config();
      const lora = loraConfig(a as unknown as LoraArgs, config.tiedEmbeddings);
      return { name: `qlora_${f.name}`, config, lora };
    },
  });
}
