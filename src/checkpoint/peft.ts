/**
 * PEFT LoRA adapters: `adapter_model.safetensors` with keys like
 * `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` (r, in) and `lora_B`
 * (out, r), plus `adapter_config.json`. Adapters are stored in Hugging Face's rotate-half
 * layout, so q/k `lora_B` rows are permuted to the model's layout on load (interleaved, tune's
 * canonical layout, after any built-in checkpointer's load) and back to rotate-half on save:
 * W + B A with B's rows permuted is W's rows permuted, so the merge commutes with the layout.
 */
import { join } from "node:path";
import { TuneError } from "../errors.ts";
import type { LlamaConfig } from "../models/llama/config.ts";
import type { LoraConfig } from "../models/model_spec.ts";
import { atomicWrite } from "./atomic_write.ts";
import { peftModuleName, peftToTuneLora, tuneLoraToPeft } from "./key_mapping.ts";
import { convertRopeLayout } from "./rope_permute.ts";
import { readSafetensors, writeSafetensors } from "./safetensors.ts";
import type { HostTensor, StateDict } from "../params/state_dict.ts";
import { mergeDoraHost } from "../modules/dora.ts";

/** adapter_config.json for `lora` (PEFT's LoraConfig keys). */
export function peftAdapterConfig(
  lora: LoraConfig,
  baseModelNameOrPath: string | null,
): Record<string, unknown> {
  const targets = [...lora.attnModules.map(peftModuleName)];
  if (lora.applyToMlp) targets.push("gate_proj", "down_proj", "up_proj");
  if (lora.applyToOutput) targets.push("lm_head");
  return {
    peft_type: "LORA",
    task_type: "CAUSAL_LM",
    base_model_name_or_path: baseModelNameOrPath,
    r: lora.rank,
    lora_alpha: lora.alpha,
    lora_dropout: lora.dropout,
    target_modules: targets,
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    use_dora: lora.useDora === true,
  };
}

/** Write the LoRA tensors of `adapter` (tune names) as a PEFT adapter into `dir`. */
export function savePeftAdapter(
  dir: string,
  adapter: StateDict,
  cfg: LlamaConfig,
  lora: LoraConfig,
  options: { baseModelNameOrPath?: string | null } = {},
): string[] {
  const half = convertRopeLayout(adapter, cfg, "half");
  const named: [string, HostTensor][] = [];
  for (const [name, t] of half) {
    const p = tuneLoraToPeft(name);
    if (p) named.push([p, t]);
  }
  writeSafetensors(join(dir, "adapter_model.safetensors"), named, { dtype: "f32" });
  const conf = peftAdapterConfig(lora, options.baseModelNameOrPath ?? null);
  atomicWrite(join(dir, "adapter_config.json"), JSON.stringify(conf, null, 2) + "\n");
  return ["adapter_model.safetensors", "adapter_config.json"];
}

/**
 * Read a PEFT adapter (a directory with adapter_model.safetensors, or the file) into tune
 * LoRA names, q/k `lora_b` permuted to `cfg.ropeLayout`.
 */
export function loadPeftAdapter(path: string, cfg: LlamaConfig): StateDict {
  let file = path;
  try {
    if (Deno.statSync(path).isDirectory) file = join(path, "adapter_model.safetensors");
  } catch {
    throw new TuneError(`adapter checkpoint ${path} not found`);
  }
  const sd: StateDict = new Map();
  for (const [p, t] of readSafetensors(file)) {
    const name = peftToTuneLora(p);
    if (!name) throw new TuneError(`${file}: unexpected adapter tensor ${p}`);
    sd.set(name, t);
  }
  return convertRopeLayout(sd, { ...cfg, ropeLayout: "half" }, cfg.ropeLayout);
}

/**
 * Base weights with LoRA folded in: W' = W + (alpha / r) * B A for every adapted linear;
 * where the adapter has a DoRA magnitude, W' = (magnitude / ||W + s B A||)[:, None] *
 * (W + s B A) per row. Returns a new state dict (adapted weights new, the rest shared)
 * without LoRA tensors.
 */
export function mergeLora(base: StateDict, adapter: StateDict, lora: LoraConfig): StateDict {
  const out: StateDict = new Map(base);
  const scale = lora.alpha / lora.rank;
  for (const [name, a] of adapter) {
    const m = /^(.*)\.lora_a\.weight$/.exec(name);
    if (!m) continue;
    const b = adapter.get(`${m[1]}.lora_b.weight`);
    const w = base.get(`${m[1]}.weight`);
    if (!b || !w) throw new TuneError(`LoRA merge: ${m[1]} lacks lora_b or its base weight`);
    const [r, inDim] = a.shape; // A (r, in)
    const outDim = b.shape[0]; // B (out, r)
    if (w.shape[0] !== outDim || w.shape[1] !== inDim) {
      throw new TuneError(`LoRA merge: ${m[1]} adapter shape does not match [${w.shape}]`);
    }
    const mag = adapter.get(`${m[1]}.magnitude`);
    if (mag) {
      if (mag.data.length !== outDim) {
        throw new TuneError(
          `DoRA merge: ${m[1]}.magnitude has ${mag.data.length} rows, not ${outDim}`,
        );
      }
      const data = mergeDoraHost(w.data, a.data, b.data, mag.data, outDim, inDim, r, lora.alpha);
      out.set(`${m[1]}.weight`, { shape: w.shape, data, sourceDtype: w.sourceDtype });
      continue;
    }
    const data = new Float32Array(w.data);
    for (let o = 0; o < outDim; o++) {
      for (let k = 0; k < r; k++) {
        const bk = b.data[o * r + k] * scale;
        if (bk === 0) continue;
        const row = o * inDim;
        const arow = k * inDim;
        for (let i = 0; i < inDim; i++) data[row + i] += bk * a.data[arow + i];
      }
    }
    out.set(`${m[1]}.weight`, { shape: w.shape, data, sourceDtype: w.sourceDtype });
  }
  for (const k of [...out.keys()]) {
    if (/\.lora_[ab]\.weight$|\.magnitude$/.test(k)) out.delete(k);
  }

  return out;
}
