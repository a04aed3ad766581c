/**
 * Model families through config.json: Qwen2 (q/k/v biases, tied), Mistral, Llama 3.1
 * rope scaling, and refusals of what tune cannot run. The Qwen2 checkpoint is made by
 * PyTorch (tests/reference/checkpoint_reference.py); loading it into tune's interleaved
 * layout permutes q/k weights AND biases, checked through the model's logits against the
 * file's own tensors run rotate-half (atol 1e-5, rtol 1e-4: the fp32 forward tolerance; the
 * rope pairing order changes fp32 rounding). HF -> Meta -> load is then bitwise.
 */
import { deepStrictEqual as assertEquals, ok as assert, throws } from "node:assert";
import { join } from "node:path";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { loadHfCheckpoint } from "../src/checkpoint/hf_checkpoint.ts";
import { llamaConfigFromHf } from "../src/checkpoint/hf_config.ts";
import { hfToTune } from "../src/checkpoint/key_mapping.ts";
import { readSafetensors } from "../src/checkpoint/safetensors.ts";
import { loadMetaCheckpoint, saveMetaCheckpoint } from "../src/checkpoint/meta_checkpoint.ts";
import type { StateDict } from "../src/params/state_dict.ts";
import type { LlamaConfig } from "../src/models/llama/config.ts";
import { createLlama } from "../src/models/llama/model.ts";
import { TuneError } from "../src/errors.ts";
import { assertClose, worstError } from "./fixture_io.ts";

const FIX = new URL("./fixtures/", import.meta.url).pathname;

function logits(sd: StateDict, config: LlamaConfig, tokens: Int32Array): Float32Array {
  const be = new CpuBackend();
  const model = createLlama(be, { name: "t", config, lora: null }, {
    batch: 1,
    seqLen: tokens.length,
  });
  model.loadStateDict(sd);
  const out = (be.download(model.forward(tokens)) as Float32Array).slice(); // (1, T, V)
  model.free();
  return out;
}

Deno.test("loadHfCheckpoint() reads Qwen2ForCausalLM with q/k/v biases, permuting q/k biases to interleaved", () => {
  const hf = loadHfCheckpoint(join(FIX, "checkpoint_hf_qwen2"));
  const c = hf.config;
  assertEquals([c.qkvBias, c.tiedEmbeddings, c.ropeTheta, c.normEps, c.ropeLayout], [
    true,
    true,
    1e6,
    1e-6,
    "interleaved",
  ]);
  assertEquals(hf.stateDict.get("layers.1.attn.k_proj.bias")!.shape, [8]);
  // The file's own tensors (rotate-half rows), run with the "half" layout as transformers does.
  const file: StateDict = new Map();
  for (const [n, t] of readSafetensors(join(FIX, "checkpoint_hf_qwen2", "model.safetensors"))) {
    const name = hfToTune(n);
    if (name && !(name === "output.weight" && c.tiedEmbeddings)) file.set(name, t);
  }
  assertEquals([...file.keys()].sort(), [...hf.stateDict.keys()].sort());
  const tokens = Int32Array.from({ length: 20 }, (_, i) => (i * 11 + 3) % 32);
  const ref = logits(file, { ...c, ropeLayout: "half" }, tokens);
  const a = logits(hf.stateDict, c, tokens);
  const w = worstError(a, ref, 1e-5, 1e-4);
  console.log(
    `Qwen2 loaded (interleaved) vs file (half) logits: max |diff| ${w.maxAbs.toExponential(2)}`,
  );
  assertClose("qwen2 logits", a, ref, { atol: 1e-5, rtol: 1e-4 });
  // Control: the loaded weights with the file's unpermuted q/k biases are visibly wrong.
  const broken: StateDict = new Map(hf.stateDict);
  for (const n of ["layers.0.attn.q_proj.bias", "layers.0.attn.k_proj.bias"]) {
    broken.set(n, file.get(n)!);
  }
  const wb = worstError(logits(broken, c, tokens), ref, 1e-5, 1e-4);
  console.log(`control, biases not permuted: max |diff| ${wb.maxAbs.toExponential(2)}`);
  assert(wb.maxAbs > 1e-3);
  // HF -> Meta -> load: same layout, so the same tensors and bitwise logits.
  const tmp = Deno.makeTempDirSync();
  try {
    saveMetaCheckpoint(tmp, hf.stateDict, c);
    const meta = loadMetaCheckpoint(tmp);
    assertEquals([meta.config.qkvBias, meta.config.ropeTheta, meta.config.normEps], [
      true,
      1e6,
      1e-6,
    ]);
    const b = logits(meta.stateDict, meta.config, tokens);
    assertEquals(worstError(b, a, 0, 0).maxAbs, 0);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

const BASE = {
  vocab_size: 32000,
  hidden_size: 4096,
  intermediate_size: 14336,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  max_position_embeddings: 32768,
  rms_norm_eps: 1e-5,
};

Deno.test("llamaConfigFromHf() maps Mistral, Llama 3.1 rope scaling and Llama attention_bias", () => {
  const m = llamaConfigFromHf({
    ...BASE,
    architectures: ["MistralForCausalLM"],
    rope_theta: 10000,
    sliding_window: 4096,
  }, "c.json");
  assertEquals([m.nKvHeads, m.qkvBias, m.tiedEmbeddings, m.ropeTheta], [8, false, false, 10000]);
  const l = llamaConfigFromHf({
    ...BASE,
    architectures: ["LlamaForCausalLM"],
    vocab_size: 128256,
    rope_theta: 500000,
    rope_scaling: {
      rope_type: "llama3",
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    },
  }, "c.json");
  assertEquals(l.ropeScaling, {
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 8192,
  });
  assertEquals(
    llamaConfigFromHf({ ...BASE, architectures: ["LlamaForCausalLM"], attention_bias: true }, "c")
      .qkvBias,
    true,
  );
});

Deno.test("llamaConfigFromHf() refuses other architectures and rope scaling types in one line", () => {
  for (
    const [json, part] of [
      [{ ...BASE, architectures: ["GPT2LMHeadModel"] }, "GPT2LMHeadModel"],
      [
        { ...BASE, architectures: ["LlamaForCausalLM"], rope_scaling: { type: "yarn", factor: 4 } },
        "yarn",
      ],
      [{ ...BASE, architectures: ["LlamaForCausalLM"], mlp_bias: true }, "mlp_bias"],
      [{ ...BASE, architectures: ["MistralForCausalLM"], hidden_act: "gelu" }, "hidden_act"],
      [{ ...BASE, architectures: ["Phi3ForCausalLM"], resid_pdrop: 0.1 }, "resid_pdrop"],
    ] as const
  ) {
    throws(
      () => llamaConfigFromHf(json as Record<string, unknown>, "/m/config.json"),
      (e: unknown) => {
        const msg = (e as Error).message;
        return e instanceof TuneError && msg.includes("/m/config.json") && msg.includes(part) &&
          !msg.includes("\n");
      },
    );
  }
});

Deno.test("sliding_window: read from Mistral (and Qwen2 only with use_sliding_window on windowed layers); sequences and generation past it run", () => {
  const json = {
    ...BASE,
    architectures: ["MistralForCausalLM"],
    vocab_size: 32,
    hidden_size: 24,
    intermediate_size: 32,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 8, // Mistral NeMo: head_dim != hidden_size / heads
    max_position_embeddings: 64,
    sliding_window: 8,
  };
  const cfg = llamaConfigFromHf(json, "c.json");
  assertEquals([cfg.slidingWindow, cfg.headDim], [8, 8]);
  const noWindow = llamaConfigFromHf(
    { ...json, architectures: ["Qwen2ForCausalLM"], use_sliding_window: false },
    "c.json",
  );
  assertEquals(noWindow.slidingWindow, undefined);
  const oneLine = (part: string) => (e: unknown) =>
    e instanceof TuneError && e.message.includes(part) && !e.message.includes("\n");
  // HF's Qwen2 windows only layers from max_window_layers on: none here, some refused
  const qwen = { ...json, architectures: ["Qwen2ForCausalLM"], use_sliding_window: true };
  assertEquals(
    llamaConfigFromHf({ ...qwen, max_window_layers: 1 }, "c.json").slidingWindow,
    undefined,
  );
  throws(
    () => llamaConfigFromHf({ ...qwen, max_window_layers: 0 }, "c.json"),
    oneLine("max_window_layers"),
  );
  const be = new CpuBackend();
  const spec = { name: "t", config: cfg, lora: null };
  // past the window the model runs windowed (logits vs PyTorch: checkpoint_gemma2_test.ts)
  const model = createLlama(be, spec, { batch: 1, seqLen: 12, training: false });
  model.initRandom(1);
  const out = be.download(model.forward(new Int32Array(12).fill(3))) as Float32Array;
  assert(out.every(Number.isFinite));
  model.setupCaches(1, 12);
  model.free();
});
