/**
 * Text generation from a model checkpoint (torchtune's generate).
 *
 *   deno task tune run generate --config llama2c/generate prompt="Once upon a time"
 *
 * The generated text goes to stdout as it is produced (a fast model's tokens gathered into
 * one write per 20 ms), and nothing else does; logs and the closing speed line (tokens/s) go
 * to stderr. The weights come from the checkpointer: a
 * base model, a base plus a PEFT adapter (`checkpointer.adapter_checkpoint`, merged into
 * the weights unless the model builder has LoRA), or merged weights. With `model: null`
 * the architecture is the one stored with the checkpoint (config.json, params.json or the
 * llama2.c header), so one config runs any model of a format.
 */
import "../src/components.ts";
import { join } from "node:path";
import { createBackend } from "../src/backend/select.ts";
import type { Checkpointer } from "../src/checkpoint/checkpointer.ts";
import { mergeLora } from "../src/checkpoint/peft.ts";
import type { StateDict } from "../src/params/state_dict.ts";
import { checkSameArchitecture } from "../src/checkpoint/validate.ts";
import { instantiate } from "../src/config/instantiate.ts";
import { TuneError } from "../src/errors.ts";
import type { LaunchOptions } from "../src/config/recipe.ts";
import type { ParamSchema, ResolvedConfig } from "../src/config/schema.ts";
import { generateTokens } from "../src/generation/generate.ts";
import { promptTokens, type PromptValue } from "../src/generation/prompt.ts";
import { TextStream } from "../src/generation/stream.ts";
import { createLlama } from "../src/models/llama/model.ts";
import type { ModelSpec } from "../src/models/model_spec.ts";
import { SeededRandom } from "../src/params/random.ts";
import { checkVocabMatches } from "../src/tokenizers/load.ts";
import { withCheckpointFields } from "../src/models/llama/config.ts";
import { buildTokenizer } from "../src/training/tokenizer.ts";

/** Every top-level key this recipe reads (torchtune's names). */
export const params = {
  model: {
    type: "component",
    kind: "model",
    default: null,
    doc: "model builder (null: the architecture stored with the checkpoint)",
  },
  tokenizer: { type: "component", kind: "tokenizer", required: true, doc: "tokenizer builder" },
  checkpointer: {
    type: "component",
    kind: "checkpointer",
    required: true,
    doc: "reads the model weights",
  },
  device: { type: "string", default: "cpu", choices: ["cpu", "cuda"], doc: "where to run" },
  dtype: { type: "string", default: "fp32", choices: ["fp32", "bf16"], doc: "compute dtype" },
  seed: { type: "int", default: null, doc: "random seed for sampling (null: pick one)" },
  prompt: {
    type: "any",
    required: true,
    doc: "the prompt: a string, or torchtune's {system, user} mapping",
  },
  chat_format: {
    type: "string",
    default: null,
    doc: "chat format to wrap the prompt in (null: raw text)",
  },
  instruct_template: {
    type: "string",
    default: null,
    doc: "instruction template to wrap the prompt in, e.g. alpaca (null: raw text)",
  },
  max_new_tokens: { type: "int", default: 300, doc: "stop after this many new tokens" },
  temperature: { type: "float", default: 0.6, doc: "sampling temperature (0: greedy)" },
  top_k: { type: "int", default: 300, doc: "sample from the k most likely tokens (null: all)" },
  top_p: {
    type: "float",
    default: null,
    doc: "nucleus sampling: keep the most likely tokens up to this probability mass (null: off)",
  },
  stop_tokens: {
    type: "int[]",
    default: null,
    doc: "token ids that also end generation (the tokenizer's EOS always does)",
  },
  enable_kv_cache: { type: "bool", default: true, doc: "cache keys and values while decoding" },
  compile: {
    type: "bool",
    default: false,
    doc: "accepted for torchtune configs; ignored (no torch.compile here)",
  },
  output_dir: {
    type: "string",
    default: null,
    doc: "accepted for torchtune configs; unused by generation",
  },
  quantizer: {
    type: "any",
    default: null,
    doc: "only null: torchao's post-training quantizers are not available here",
  },
} satisfies ParamSchema;

/** This recipe has no top-level alias keys. */
export const keyAliases = {} as const;

/** The resolved config of this recipe. */
export type GenerateConfig = ResolvedConfig<typeof params>;

const encoder = new TextEncoder();

/** Write text to stdout now (generated text only). */
function writeOut(text: string): void {
  if (text) Deno.stdout.writeSync(encoder.encode(text));
}

/** Longest a generated piece waits before it is written (one write per token costs ~8 us). */
const FLUSH_MS = 20;

/**
 * Generated text to stdout: a piece is written at once when the last write is FLUSH_MS old
 * (or it holds a newline), else with the next piece that is.
 */
class Printer {
  #pending = "";
  #last = performance.now();

  add(text: string): void {
    this.#pending += text;
    const now = performance.now();
    if (now - this.#last >= FLUSH_MS || text.includes("\n")) {
      this.flush();
      this.#last = now;
    }
  }

  flush(): void {
    writeOut(this.#pending);
    this.#pending = "";
  }
}

/**
 * The adapter's LoRA scale from the adapter_config.json beside it: merging needs r and
 * lora_alpha, which the tensors alone do not give.
 */
function adapterScaleConfig(path: string): { rank: number; alpha: number } {
  let file = path;
  try {
    file = Deno.statSync(path).isDirectory ? join(path, "adapter_config.json") : join(
      path.replace(/\/[^/]*$/, "") || ".",
      "adapter_config.json",
    );
  } catch {
    throw new TuneError(`adapter checkpoint ${path} not found`);
  }
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(Deno.readTextFileSync(file));
  } catch {
    throw new TuneError(
      `cannot read ${file} (r and lora_alpha of the adapter); save the adapter with its adapter_config.json`,
    );
  }
  const rank = Number(cfg.r);
  const alpha = Number(cfg.lora_alpha);
  if (!(rank > 0) || !Number.isFinite(alpha)) {
    throw new TuneError(`${file} lacks a valid r / lora_alpha; check the adapter files`);
  }
  return { rank, alpha };
}

/** Run the recipe: load, tokenize the prompt, stream the continuation. */
export async function main(cfg: GenerateConfig, _launch: LaunchOptions): Promise<void> {
  if (cfg.quantizer !== null) {
    throw new TuneError("quantizer is not supported here; set quantizer: null");
  }
  const log = (s: string) => console.error(s);
  // Model description first: everything else is checked against it.
  const spec = cfg.model ? instantiate<ModelSpec>(cfg.model) : null;
  const backend = await createBackend(cfg.device as "cpu" | "cuda");
  if (cfg.dtype === "bf16" && cfg.device === "cpu") log("dtype=bf16 on cpu: computing in fp32");

  // Weights (and adapter) on the host, in tune names.
  const checkpointer = instantiate<Checkpointer>(cfg.checkpointer);
  const loaded = checkpointer.load({ resumeFromCheckpoint: false });
  if (spec) checkSameArchitecture(spec.config, loaded.config, "checkpointer");
  const config = withCheckpointFields(spec?.config ?? loaded.config, loaded.config);
  let weights: StateDict = loaded.stateDict;
  const lora = spec?.lora ?? null;
  if (loaded.adapter) {
    if (lora) {
      weights = new Map([...weights, ...loaded.adapter]);
    } else {
      const adapterPath = String(cfg.checkpointer.adapter_checkpoint);
      const dir = String(cfg.checkpointer.checkpoint_dir);
      const full = adapterPath.startsWith("/") ? adapterPath : join(dir, adapterPath);
      const { rank, alpha } = adapterScaleConfig(full);
      weights = mergeLora(weights, loaded.adapter, {
        attnModules: [],
        applyToMlp: false,
        applyToOutput: false,
        rank,
        alpha,
        dropout: 0,
      });
      log(`merged LoRA adapter ${full} (r=${rank}, alpha=${alpha})`);
    }
  } else if (lora) {
    throw new TuneError(
      `model ${
        cfg.model!._component_
      } has LoRA adapters but no adapter was loaded; set checkpointer.adapter_checkpoint or use the base builder`,
    );
  }

  // Tokenizer: must fit the model's vocabulary.
  const { tokenizer, path: tokenizerPath } = buildTokenizer(
    cfg.tokenizer,
    cfg.checkpointer.checkpoint_dir as string,
  );
  checkVocabMatches(tokenizer, config.vocabSize, tokenizerPath);

  // Model with the loaded weights; training buffers are minimal, generation has its own.
  const model = createLlama(backend, { name: spec?.name ?? "checkpoint", config, lora }, {
    batch: 1,
    seqLen: 1,
    training: false, // generation needs no gradients or optimizer state
    activationDtype: cfg.dtype === "bf16" && cfg.device === "cuda" ? "bf16" : "f32",
  });
  model.loadStateDict(weights);

  // Prompt, sampling and the stream to stdout.
  const ids = promptTokens(tokenizer, cfg.prompt as PromptValue, {
    instructTemplate: cfg.instruct_template,
    chatFormat: cfg.chat_format,
  });
  let seed = cfg.seed;
  if (seed === null) {
    seed = crypto.getRandomValues(new Uint32Array(1))[0] >>> 1;
    if (cfg.temperature > 0) log(`seed: ${seed} (set seed=${seed} to repeat this run)`);
  }
  const stopIds = [...new Set([...tokenizer.stopIds, ...(cfg.stop_tokens ?? [])])];
  const stream = new TextStream(tokenizer, ids);
  const printer = new Printer();
  const result = generateTokens(model, backend, [ids], {
    temperature: cfg.temperature,
    topK: cfg.top_k,
    topP: cfg.top_p,
    maxNewTokens: cfg.max_new_tokens,
    stopIds,
    rng: new SeededRandom(seed),
    kvCache: cfg.enable_kv_cache,
    onToken: (_b, id) => printer.add(stream.push(id)),
  });
  printer.add(stream.flush());
  // the output ends with a newline, as a text stream should (piped: the text, then "\n")
  if (result.newTokens > 0) printer.add("\n");
  printer.flush();
  model.free();
  const n = result.newTokens;
  const secs = result.prefillSeconds + result.decodeSeconds;
  log(
    `${n} new tokens (${result.finish[0] === "stop" ? "stop token" : "max_new_tokens"}) in ` +
      `${secs.toFixed(2)} s: ${(n / Math.max(secs, 1e-9)).toFixed(1)} tokens/s ` +
      `(prompt ${ids.length} tokens, ${result.prefillSeconds.toFixed(3)} s)`,
  );
}
