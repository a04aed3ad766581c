/**
 * Phi-3 Mini (torchtune.models.phi3): the builders, and Hugging Face Phi-3 checkpoints whose
 * q/k/v and gate/up are fused (qkv_proj, gate_up_proj). The fixture is made by PyTorch
 * (tests/reference/phi3_reference.py): a tiny Phi3ForCausalLM (GQA: 4 heads, 2 kv heads) and
 * the logits of transformers' Phi-3 forward run on the FUSED tensors. Tolerances: logits fp32
 * forward atol 1e-5, rtol 1e-4; save -> file and adapter round trips bitwise (rows are only
 * moved, never computed).
 */
import { deepStrictEqual as assertEquals, ok as assert, throws } from "node:assert";
import { join } from "node:path";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import type { Checkpointer } from "../src/checkpoint/checkpointer.ts";
import "../src/checkpoint/components.ts";
import { loadHfCheckpoint, saveHfCheckpoint } from "../src/checkpoint/hf_checkpoint.ts";
import { llamaConfigFromHf } from "../src/checkpoint/hf_config.ts";
import { mergeLora } from "../src/checkpoint/peft.ts";
import { PHI3_ADAPTER_FILE } from "../src/checkpoint/phi3_checkpointer.ts";
import { convertRopeLayout } from "../src/checkpoint/rope_permute.ts";
import { readSafetensors, writeSafetensors } from "../src/checkpoint/safetensors.ts";
import type { StateDict } from "../src/params/state_dict.ts";
import { readPth } from "../src/checkpoint/torch_pth.ts";
import { findComponent } from "../src/config/registry.ts";
import { TuneError } from "../src/errors.ts";
import { loraParamShapes } from "../src/models/builders/param_shapes.ts";
import { parameterCount } from "../src/models/builders/parameter_count.ts";
import "../src/models/components.ts";
import type { LlamaConfig } from "../src/models/llama/config.ts";
import { createLlama } from "../src/models/llama/model.ts";
import type { LoraConfig, ModelSpec } from "../src/models/model_spec.ts";
import { assertClose, loadFixture, worstError } from "./fixture_io.ts";

const FIX = new URL("./fixtures/", import.meta.url).pathname;
const PHI3 = join(FIX, "checkpoint_hf_phi3");

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

function checkpointer(args: Record<string, unknown>): Checkpointer {
  return findComponent("torchtune.training.FullModelHFCheckpointer")!.build({
    checkpoint_files: null,
    adapter_checkpoint: null,
    recipe_checkpoint: null,
    resume_from_checkpoint: false,
    safe_serialization: true,
    ...args,
  }) as Checkpointer;
}

function bitwise(label: string, a: Float32Array, b: Float32Array) {
  assertEquals(a.length, b.length, label);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) {
    if (ua[i] !== ub[i]) throw new Error(`${label}[${i}]: ${a[i]} != ${b[i]}`);
  }
}

function oneLine(part: string) {
  return (e: unknown) => {
    const msg = (e as Error).message;
    if (!(e instanceof TuneError) || !msg.includes(part) || msg.includes("\n")) {
      throw new Error(`expected a one-line TuneError naming ${part}, got: ${msg}`);
    }
    return true;
  };
}

function rand(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s / 2 ** 32 - 0.5) * 0.2;
  });
}

Deno.test("`loadHfCheckpoint()` splits Phi-3's fused qkv_proj / gate_up_proj and gives transformers' logits", () => {
  const hf = loadHfCheckpoint(PHI3);
  const c = hf.config;
  assertEquals([c.nHeads, c.nKvHeads, c.hiddenDim, c.tiedEmbeddings, c.qkvBias], [
    4,
    2,
    24,
    false,
    false,
  ]);
  assertEquals(hf.stateDict.get("layers.1.attn.q_proj.weight")!.shape, [16, 16]);
  assertEquals(hf.stateDict.get("layers.1.attn.k_proj.weight")!.shape, [8, 16]);
  assertEquals(hf.stateDict.get("layers.1.mlp.w3.weight")!.shape, [24, 16]);
  assertEquals(hf.weightMap.get("model.layers.0.self_attn.qkv_proj.weight"), "model.safetensors");
  const fx = loadFixture("checkpoint_hf_phi3_expected");
  const tokens = fx.i32("tokens");
  const ref = fx.f32("logits"); // (1, T, V) from transformers' Phi-3 forward on fused weights
  const got = logits(hf.stateDict, c, tokens);
  const w = worstError(got, ref, 1e-5, 1e-4);
  console.log(`Phi-3 loaded vs PyTorch reference logits: max |diff| ${w.maxAbs.toExponential(2)}`);
  assertClose("phi3 logits", got, ref, { atol: 1e-5, rtol: 1e-4 });
  // Control: gate and up swapped (a split in the wrong order) is visibly wrong.
  const swapped: StateDict = new Map(hf.stateDict);
  swapped.set("layers.0.mlp.w1.weight", hf.stateDict.get("layers.0.mlp.w3.weight")!);
  swapped.set("layers.0.mlp.w3.weight", hf.stateDict.get("layers.0.mlp.w1.weight")!);
  const ws = worstError(logits(swapped, c, tokens), ref, 1e-5, 1e-4);
  console.log(`control, gate/up swapped: max |diff| ${ws.maxAbs.toExponential(2)}`);
  assert(ws.maxAbs > 1e-3);
});

Deno.test("FullModelHFCheckpointer with model_type PHI3_MINI saves fused tensors bitwise equal to the input file's", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const ck = checkpointer({ checkpoint_dir: PHI3, output_dir: tmp, model_type: "PHI3_MINI" });
    const loaded = ck.load();
    const dir = ck.save({ stateDict: loaded.stateDict, epoch: 0 });
    const input = readSafetensors(join(PHI3, "model.safetensors"));
    const output = readSafetensors(join(dir, "model.safetensors"));
    assertEquals([...output.keys()].sort(), [...input.keys()].sort());
    for (const [name, t] of input) {
      assertEquals(output.get(name)!.shape, t.shape, name);
      assertEquals(output.get(name)!.sourceDtype, "f32", name);
      bitwise(name, output.get(name)!.data, t.data);
    }
    const json = JSON.parse(Deno.readTextFileSync(join(dir, "config.json")));
    assertEquals([json.architectures, json.model_type, json.sliding_window], [
      ["Phi3ForCausalLM"],
      "phi3",
      63,
    ]);
    // Without the input's config.json, model_type PHI3_MINI alone picks the fused layout.
    const bare = join(tmp, "bare");
    saveHfCheckpoint(bare, loaded.stateDict, loaded.config, { modelType: "PHI3_MINI" });
    const again = readSafetensors(join(bare, "model.safetensors"));
    for (const [name, t] of input) bitwise(`bare ${name}`, again.get(name)!.data, t.data);
    const bareJson = JSON.parse(Deno.readTextFileSync(join(bare, "config.json")));
    assertEquals([bareJson.architectures[0], bareJson.model_type], ["Phi3ForCausalLM", "phi3"]);
    assertEquals(loadHfCheckpoint(bare).config, loaded.config);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("Phi3MiniHFCheckpointer saves LoRA adapters in torchtune's format (adapter_model.pt, not PEFT) and merged weights fused", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const args = { checkpoint_dir: PHI3, output_dir: join(tmp, "out"), model_type: "PHI3_MINI" };
    const ck = checkpointer(args);
    const base = ck.load();
    const lora: LoraConfig = {
      attnModules: ["q_proj", "k_proj", "v_proj", "output_proj"],
      applyToMlp: true,
      applyToOutput: true,
      rank: 2,
      alpha: 4,
      dropout: 0,
    };
    const adapter: StateDict = new Map();
    let seed = 5;
    for (const [name, shape] of loraParamShapes(base.config, lora)) {
      adapter.set(name, { shape, data: rand(shape[0] * shape[1], seed++) });
    }
    const merged = mergeLora(base.stateDict, adapter, lora);
    const dir = ck.save({ stateDict: merged, adapter: { stateDict: adapter, lora }, epoch: 0 });
    const files = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assertEquals(files, [PHI3_ADAPTER_FILE, "config.json", "model.safetensors"]);
    // The file holds tune names with q/k lora_b rows rotate-half (torchtune's Phi-3 layout).
    const file = readPth(join(dir, PHI3_ADAPTER_FILE));
    assertEquals([...file.keys()].sort(), [...adapter.keys()].sort());
    const half = convertRopeLayout(adapter, base.config, "half");
    for (const [n, t] of half) bitwise(`file ${n}`, file.get(n)!.data, t.data);
    assert(
      file.get("layers.0.attn.q_proj.lora_b.weight")!.data.some((v, i) =>
        v !== adapter.get("layers.0.attn.q_proj.lora_b.weight")!.data[i]
      ),
      "q lora_b rows are permuted in the file",
    );
    // adapter_checkpoint reads it back into tune's layout, bitwise.
    const re = checkpointer({ ...args, adapter_checkpoint: join(dir, PHI3_ADAPTER_FILE) }).load();
    for (const [n, t] of adapter) bitwise(`reloaded ${n}`, re.adapter!.get(n)!.data, t.data);
    // The merged model: fused on disk, loads back to the merged weights bitwise.
    const out = readSafetensors(join(dir, "model.safetensors"));
    assert(out.has("model.layers.1.self_attn.qkv_proj.weight"));
    assert(!out.has("model.layers.1.self_attn.q_proj.weight"));
    const back = loadHfCheckpoint(dir);
    for (const [n, t] of merged) bitwise(`merged ${n}`, back.stateDict.get(n)!.data, t.data);
    // A PEFT safetensors adapter is refused in one line.
    const peft = join(tmp, "adapter_model.safetensors");
    writeSafetensors(peft, [[
      "base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight",
      { shape: [2, 16], data: rand(32, 1) },
    ]]);
    throws(
      () => checkpointer({ ...args, adapter_checkpoint: peft }).load(),
      oneLine("torchtune's format"),
    );
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("`loadHfCheckpoint()` names a missing or misshapen qkv_proj of a Phi-3 checkpoint in one line", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const tensors = readSafetensors(join(PHI3, "model.safetensors"));
    Deno.copyFileSync(join(PHI3, "config.json"), join(tmp, "config.json"));
    const missing = [...tensors].filter(([n]) => n !== "model.layers.1.self_attn.qkv_proj.weight");
    writeSafetensors(join(tmp, "model.safetensors"), missing);
    throws(() => loadHfCheckpoint(tmp), oneLine("model.layers.1.self_attn.qkv_proj.weight"));
    const short = [...tensors].map(([n, t]): [string, typeof t] =>
      n === "model.layers.0.self_attn.qkv_proj.weight"
        ? [n, { shape: [24, 16], data: t.data.subarray(0, 24 * 16) }]
        : [n, t]
    );
    writeSafetensors(join(tmp, "model.safetensors"), short);
    throws(() => loadHfCheckpoint(tmp), oneLine("model.layers.0.self_attn.qkv_proj.weight"));
    // model_type PHI3_MINI on a Llama checkpoint is refused before anything is trained.
    throws(
      () =>
        checkpointer({
          checkpoint_dir: join(FIX, "checkpoint_hf_qwen2"),
          output_dir: join(tmp, "o"),
          model_type: "PHI3_MINI",
        }).load(),
      oneLine("PHI3_MINI"),
    );
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("`llamaConfigFromHf()` refuses Phi-3 128k rope scaling and an odd partial rotary in one line", () => {
  const base = {
    architectures: ["Phi3ForCausalLM"],
    vocab_size: 32064,
    hidden_size: 3072,
    intermediate_size: 8192,
    num_hidden_layers: 32,
    num_attention_heads: 32,
  };
  assertEquals(llamaConfigFromHf(base, "c.json").nKvHeads, 32);
  throws(
    () => llamaConfigFromHf({ ...base, rope_scaling: { type: "longrope", short_factor: [] } }, "c"),
    oneLine("longrope"),
  );
  // partial rotary is read (tests/model_partial_rotary_test.ts); one that rotates an odd
  // number of dims, or on an architecture transformers does not apply it to, is refused
  assertEquals(
    llamaConfigFromHf({ ...base, partial_rotary_factor: 0.75 }, "c").partialRotaryFactor,
    0.75,
  );
  throws(
    () => llamaConfigFromHf({ ...base, partial_rotary_factor: 0.01 }, "c"),
    oneLine("partial_rotary_factor"),
  );
  throws(
    () =>
      llamaConfigFromHf({
        ...base,
        architectures: ["LlamaForCausalLM"],
        partial_rotary_factor: 0.5,
      }, "c"),
    oneLine("partial_rotary_factor"),
  );
});

Deno.test("phi3_mini / lora_phi3_mini builders have torchtune's Phi-3 Mini architecture (3,821,079,552 parameters)", () => {
  const spec = findComponent("torchtune.models.phi3.phi3_mini")!.build({}) as ModelSpec;
  const c = spec.config;
  assertEquals(
    [c.vocabSize, c.nLayers, c.nHeads, c.nKvHeads, c.dim, c.hiddenDim, c.maxSeqLen, c.normEps],
    [32064, 32, 32, 32, 3072, 8192, 4096, 1e-5],
  );
  assertEquals([c.ropeTheta, c.tiedEmbeddings, c.ropeLayout, c.qkvBias, c.ropeScaling], [
    10000,
    false,
    "half",
    false,
    null,
  ]);
  // microsoft/Phi-3-mini-4k-instruct: 7,642,159,104 bytes of bf16 tensors = 3,821,079,552.
  assertEquals(parameterCount(spec).total, 3_821_079_552);
  const l = findComponent("torchtune.models.phi3.lora_phi3_mini")!.build({
    lora_attn_modules: ["q_proj", "v_proj", "output_proj"],
    apply_lora_to_mlp: true,
    apply_lora_to_output: false,
    lora_rank: 8,
    lora_alpha: 16,
    lora_dropout: 0,
  }) as ModelSpec;
  assertEquals([l.name, l.lora!.rank, l.config.dim], ["lora_phi3_mini", 8, 3072]);
  // q, v, o: 8*(3072+3072) each; w1, w3: 8*(3072+8192), w2: 8*(8192+3072); 32 layers.
  assertEquals(parameterCount(l).lora, 32 * (3 * 8 * 6144 + 3 * 8 * 11264));
});
