/**
 * The evaluation recipes' model (eval, eleuther_eval): the builder's spec, the backend, the
 * weights (and a LoRA adapter) on the host and the tokenizer first; the model itself once
 * the data fixes its (B, T). Inference only: no gradients or optimizer state.
 */
import type { Backend } from "../backend/ops.ts";
import { createBackend } from "../backend/select.ts";
import type { Checkpointer } from "../checkpoint/checkpointer.ts";
import { loadPeftAdapter } from "../checkpoint/peft.ts";
import type { StateDict } from "../params/state_dict.ts";
import { instantiate } from "../config/instantiate.ts";
import type { ComponentSection, ParamSchema } from "../config/schema.ts";
import { TuneError } from "../errors.ts";
import { createLlama, type LlamaModel } from "../models/llama/mod.ts";
import type { ModelSpec } from "../models/model_spec.ts";
import { checkVocabMatches } from "../tokenizers/mod.ts";
import type { Tokenizer } from "../tokenizers/types.ts";
import { join } from "node:path";
import { modelDtypes } from "./steps.ts";
import { withCheckpointFields } from "../models/llama/config.ts";
import { buildTokenizer } from "./tokenizer.ts";

/** The keys of `EvalModelKeys` as the evaluation recipes declare them (torchtune's names). */
export const evalModelParams = {
  model: {
    type: "component",
    kind: "model",
    required: true,
    doc: "model builder (a lora_* builder to evaluate with an adapter)",
  },
  tokenizer: { type: "component", kind: "tokenizer", required: true, doc: "tokenizer builder" },
  checkpointer: {
    type: "component",
    kind: "checkpointer",
    required: true,
    doc: "reads the model weights (and adapter_checkpoint with a lora_* builder)",
  },
  model_init: {
    type: "string",
    default: "checkpoint",
    choices: ["checkpoint", "random"],
    doc: "checkpoint: weights from the checkpointer; random: seeded fresh weights " +
      "(tiny test models, seed as in training)",
  },
  seed: { type: "int", default: null, doc: "seed of model_init=random weights (null: 0)" },
  device: { type: "string", default: "cpu", choices: ["cpu", "cuda"], doc: "where to run" },
  dtype: { type: "string", default: "fp32", choices: ["fp32", "bf16"], doc: "compute dtype" },
} satisfies ParamSchema;

/** The recipe keys the evaluated model comes from. */
export interface EvalModelKeys {
  model: ComponentSection;
  tokenizer: ComponentSection;
  checkpointer: ComponentSection;
  model_init: string;
  seed: number | null;
  device: string;
  dtype: string;
}

/** Everything but the model, ready for `buildEvalModel`. */
export interface EvalModelParts {
  spec: ModelSpec;
  backend: Backend;
  tokenizer: Tokenizer;
  weights: StateDict | null;
  adapter: StateDict | null;
  dtypes: ReturnType<typeof modelDtypes>;
}

/** Spec, backend, weights (+ adapter) and tokenizer, each checked with a one-line error. */
export async function prepareEvalModel(
  keys: EvalModelKeys,
  quiet = false,
): Promise<EvalModelParts> {
  // Model builder first: everything else is checked against it.
  const spec = instantiate<ModelSpec>(keys.model);
  const adapterPath = keys.checkpointer.adapter_checkpoint as string | null;
  if (adapterPath && !spec.lora) {
    throw new TuneError(
      `checkpointer.adapter_checkpoint is set but model ${keys.model._component_} has no LoRA; ` +
        `use the lora_* builder the adapter was trained with`,
    );
  }
  if (spec.lora && !adapterPath) {
    throw new TuneError(
      `model ${keys.model._component_} has LoRA adapters but checkpointer.adapter_checkpoint is not set; ` +
        `set it to the run's epoch_<N> directory, or use the builder without lora_`,
    );
  }
  // Backend before any slow load.
  const dtypes = modelDtypes(keys.dtype, keys.device);
  if (dtypes.note && !quiet) console.error(dtypes.note);
  const backend = await createBackend(keys.device as "cpu" | "cuda");
  // Weights (and adapter) on the host.
  let weights: StateDict | null = null;
  let adapter: StateDict | null = null;
  if (keys.model_init === "checkpoint") {
    const loaded = instantiate<Checkpointer>(keys.checkpointer).load({
      resumeFromCheckpoint: false,
    });
    spec.config = withCheckpointFields(spec.config, loaded.config);
    weights = loaded.stateDict;
    adapter = loaded.adapter;
  } else if (adapterPath) {
    const dir = keys.checkpointer.checkpoint_dir as string;
    adapter = loadPeftAdapter(
      adapterPath.startsWith("/") ? adapterPath : join(dir, adapterPath),
      spec.config,
    );
  }
  // Tokenizer: must fit the model's vocabulary.
  const { tokenizer, path: tokenizerPath } = buildTokenizer(
    keys.tokenizer,
    keys.checkpointer.checkpoint_dir as string,
  );
  checkVocabMatches(tokenizer, spec.config.vocabSize, tokenizerPath);
  return { spec, backend, tokenizer, weights, adapter, dtypes };
}

/** The inference model for (B, T), its weights loaded (seeded random ones for model_init=random). */
export function buildEvalModel(
  parts: EvalModelParts,
  B: number,
  T: number,
  seed: number | null,
): LlamaModel {
  if (T > parts.spec.config.maxSeqLen) {
    throw new TuneError(
      `samples are up to ${T} tokens but the model's max_seq_len is ${parts.spec.config.maxSeqLen}; ` +
        `set tokenizer.max_seq_len=${parts.spec.config.maxSeqLen}`,
    );
  }
  const model = createLlama(parts.backend, parts.spec, {
    batch: B,
    seqLen: T,
    seed: seed ?? 0,
    training: false, // evaluation needs no gradients or optimizer state
    activationDtype: parts.dtypes.activationDtype,
    frozenDtype: parts.dtypes.frozenDtype,
  });
  let weights = parts.weights;
  if (!weights) {
    model.initRandom(seed ?? 0);
    weights = model.base.toStateDict();
  }
  const sd = new Map(weights);
  for (const [k, t] of parts.adapter ?? []) sd.set(k, t);
  model.loadStateDict(sd);
  return model;
}
