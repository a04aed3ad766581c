/**
 * Gemma 1 (torchtune.models.gemma): builders, the GeGLU op, Hugging Face GemmaForCausalLM
 * checkpoints (model_type GEMMA), training gradients and KV-cache generation. The fixtures
 * are made by PyTorch (tests/reference/gemma_reference.py): a tiny GemmaForCausalLM with
 * head_dim 8 != hidden_size 24 / 4 heads, one key/value head, tied output, zero-centred norm
 * weights, and transformers' Gemma forward written out in fp32 torch.
 * Tolerances: logits (fp32 forward) atol 1e-5 rtol 1e-4; loss and every gradient atol 1e-4
 * rtol 1e-3; geglu op vs torch atol 1e-5 rtol 1e-4 (fp32 forward); KV-cache logits vs the full
 * forward atol 1e-5 rtol 1e-4; save -> load round trip bitwise (tensors are only moved);
 * the ZeRO-3 path (trainStep on group windows) bitwise equal to lossAndBackward.
 */
import { deepStrictEqual as assertEquals, ok as assert, throws } from "node:assert";
import { join } from "node:path";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import type { Checkpointer } from "../src/checkpoint/checkpointer.ts";
import "../src/checkpoint/components.ts";
import { loadHfCheckpoint } from "../src/checkpoint/hf_checkpoint.ts";
import { mergeLora } from "../src/checkpoint/peft.ts";
import { hfConfigJson } from "../src/checkpoint/hf_config.ts";
import { tuneToHf } from "../src/checkpoint/key_mapping.ts";
import { convertRopeLayout } from "../src/checkpoint/rope_permute.ts";
import { readSafetensors } from "../src/checkpoint/safetensors.ts";
import type { StateDict } from "../src/params/state_dict.ts";
import { checkSameArchitecture } from "../src/checkpoint/validate.ts";
import { findComponent } from "../src/config/registry.ts";
import { TuneError } from "../src/errors.ts";
import { loraParamShapes } from "../src/models/builders/param_shapes.ts";
import { parameterCount } from "../src/models/builders/parameter_count.ts";
import "../src/models/components.ts";
import { embedScaleValue, type LlamaConfig } from "../src/models/llama/config.ts";
import { createLlama, crossEntropyHead } from "../src/models/llama/model.ts";
import type { LoraConfig, ModelSpec } from "../src/models/model_spec.ts";
import { AdamW, ADAMW_DEFAULTS } from "../src/optim/adamw.ts";
import { ShardedOptimizer } from "../src/training/sharded.ts";
import { assertClose, loadFixture, worstError } from "./fixture_io.ts";
import { checkCachedGreedy, fullLogits } from "./_decode_helpers.ts";

const FIX = new URL("./fixtures/", import.meta.url).pathname;
const GEMMA = join(FIX, "checkpoint_hf_gemma");

function build(name: string, args: Record<string, unknown> = {}): ModelSpec {
  const c = findComponent(name);
  if (!c) throw new Error(`${name} is not registered`);
  return c.build(args) as ModelSpec;
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

Deno.test("gemma builders have torchtune's architecture and the published parameter counts", () => {
  const b2 = build("torchtune.models.gemma.gemma_2b").config;
  assertEquals(
    [b2.dim, b2.nLayers, b2.nHeads, b2.nKvHeads, b2.headDim, b2.hiddenDim, b2.vocabSize],
    [2048, 18, 8, 1, 256, 16384, 256000],
  );
  assertEquals([b2.maxSeqLen, b2.normEps, b2.ropeTheta, b2.tiedEmbeddings], [
    8192,
    1e-6,
    10000,
    true,
  ]);
  assertEquals([b2.hiddenAct, b2.embedScale, b2.normOffset], ["gelu_tanh", true, 1]);
  const b7 = build("torchtune.models.gemma.gemma_7b").config;
  assertEquals([b7.dim, b7.nHeads, b7.nKvHeads, b7.headDim], [3072, 16, 16, 256]);
  // Hugging Face safetensors metadata of google/gemma-2b and google/gemma-7b
  const counts: [string, number][] = [
    ["torchtune.models.gemma.gemma_2b", 2_506_172_416],
    ["torchtune.models.gemma.gemma_7b", 8_537_680_896],
  ];
  for (const [name, want] of counts) {
    const got = parameterCount(build(name)).total;
    console.log(`${name}: ${got.toLocaleString("en-US")}`);
    assertEquals(got, want);
  }
  // q_proj of gemma_7b is (NH*HS, C) = (4096, 3072); LoRA on it adds r * (3072 + 4096)
  const l7 = build("torchtune.models.gemma.lora_gemma_7b", {
    lora_attn_modules: ["q_proj"],
    lora_rank: 8,
  });
  assertEquals(parameterCount(l7).lora, 28 * 8 * (3072 + 4096));
  throws(
    () =>
      build("torchtune.models.gemma.lora_gemma_2b", {
        lora_attn_modules: ["q_proj"],
        apply_lora_to_output: true,
      }),
    oneLine("apply_lora_to_output"),
  );
  const g = build("torchtune.models.gemma.gemma", {
    vocab_size: 48,
    num_layers: 2,
    num_heads: 4,
    head_dim: 8,
    num_kv_heads: 1,
    embed_dim: 24,
    intermediate_dim: 40,
    max_seq_len: 64,
    attn_dropout: 0,
    norm_eps: 1e-6,
    rope_base: 10000,
    norm_embeddings: true,
  });
  assertEquals(g.config.headDim, 8);
});

Deno.test("embedScaleValue() rounds sqrt(dim) to the activation dtype as torch.tensor(dim ** 0.5, dtype)", () => {
  const c7 = build("torchtune.models.gemma.gemma_7b").config;
  assertEquals(embedScaleValue(c7, "f32"), Math.fround(Math.sqrt(3072)));
  assertEquals(embedScaleValue(c7, "bf16"), 55.5); // torch.tensor(55.4256, dtype=bfloat16)
  assertEquals(embedScaleValue(build("torchtune.models.gemma.gemma_2b").config, "bf16"), 45.25);
  assertEquals(embedScaleValue(build("torchtune.models.llama3_2.llama3_2_1b").config, "f32"), 1);
});

Deno.test("gegluForward()/gegluBackward() match torch's gelu(gate, approximate='tanh') * up and its autograd gradients", () => {
  const fx = loadFixture("ops_geglu");
  const gate = fx.f32("gate"), up = fx.f32("up"), dout = fx.f32("dout");
  const n = gate.length;
  const be = new CpuBackend();
  const g = be.alloc(n), u = be.alloc(n), d = be.alloc(n), o = be.alloc(n);
  be.upload(g, gate);
  be.upload(u, up);
  be.upload(d, dout);
  be.gegluForward(o, g, u, n);
  const out = be.download(o) as Float32Array;
  // dgate/dup alias gate/up, as the model uses them
  be.gegluBackward(g, u, d, g, u, n);
  const dg = be.download(g) as Float32Array, du = be.download(u) as Float32Array;
  for (
    const [label, got, want] of [["out", out, "out"], ["dgate", dg, "dgate"], [
      "dup",
      du,
      "dup",
    ]] as const
  ) {
    const ref = fx.f32(want);
    console.log(
      `geglu ${label} vs torch: max |diff| ${
        worstError(got, ref, 1e-5, 1e-4).maxAbs.toExponential(2)
      }`,
    );
    assertClose(`geglu ${label}`, got, ref, { atol: 1e-5, rtol: 1e-4 });
  }
});

Deno.test("`loadHfCheckpoint()` reads GemmaForCausalLM and gives transformers' Gemma logits", () => {
  const hf = loadHfCheckpoint(GEMMA);
  const c = hf.config;
  assertEquals([c.dim, c.nHeads, c.nKvHeads, c.headDim, c.tiedEmbeddings], [24, 4, 1, 8, true]);
  assertEquals([c.hiddenAct, c.embedScale, c.normOffset, c.ropeLayout], [
    "gelu_tanh",
    true,
    1,
    "interleaved",
  ]);
  assertEquals(hf.stateDict.get("layers.0.attn.q_proj.weight")!.shape, [32, 24]);
  assertEquals(hf.stateDict.get("layers.0.attn.output_proj.weight")!.shape, [24, 32]);
  assert(!hf.stateDict.has("output.weight"));
  const fx = loadFixture("checkpoint_hf_gemma_expected");
  const tokens = fx.i32("tokens");
  const ref = fx.f32("logits");
  const got = fullLogits(hf.stateDict, c, tokens);
  console.log(
    `Gemma loaded vs PyTorch logits: max |diff| ${
      worstError(got, ref, 1e-5, 1e-4).maxAbs.toExponential(2)
    }`,
  );
  assertClose("gemma logits", got, ref, { atol: 1e-5, rtol: 1e-4 });
  // Controls: each Gemma difference matters on this model
  const controls: [string, LlamaConfig][] = [
    ["silu MLP", { ...c, hiddenAct: "silu" }],
    ["no embedding scale", { ...c, embedScale: false }],
    ["norm without 1 +", { ...c, normOffset: 0 }],
  ];
  for (const [what, cfg] of controls) {
    const w = worstError(fullLogits(hf.stateDict, cfg, tokens), ref, 1e-5, 1e-4);
    console.log(`control, ${what}: max |diff| ${w.maxAbs.toExponential(2)}`);
    assert(w.maxAbs > 1e-2, what);
  }
});

Deno.test("`lossAndBackward()` of a Gemma model gives PyTorch's loss and every gradient", () => {
  const hf = loadHfCheckpoint(GEMMA);
  const fx = loadFixture("checkpoint_hf_gemma_expected");
  const tokens = fx.i32("train_tokens"), targets = fx.i32("train_targets");
  const be = new CpuBackend();
  const model = createLlama(be, { name: "g", config: hf.config, lora: null }, {
    batch: 2,
    seqLen: 6,
  });
  model.loadStateDict(hf.stateDict);
  model.zeroGrad();
  const count = targets.filter((t) => t !== -100).length;
  const r = model.lossAndBackward(tokens, targets, 1 / count);
  const loss = r.lossSum / r.tokens;
  console.log(`Gemma loss ${loss} vs PyTorch ${fx.f32("loss")[0]}`);
  assertClose("loss", new Float32Array([loss]), fx.f32("loss"), { atol: 1e-4, rtol: 1e-3 });
  // gradients in tune names and interleaved rows -> Hugging Face names and rotate-half rows
  const grads: StateDict = new Map();
  for (const name of model.trainableNames()) {
    const data = (be.download(model.base.grad(name)!) as Float32Array).slice();
    grads.set(name, { shape: [...model.base.layout.get(name)!.shape], data });
  }
  const half = convertRopeLayout(grads, hf.config, "half");
  let worst = 0;
  for (const [name, t] of half) {
    const ref = fx.f32(`grad.${tuneToHf(name)}`);
    worst = Math.max(worst, worstError(t.data, ref, 1e-4, 1e-3).maxAbs);
    assertClose(`grad ${name}`, t.data, ref, { atol: 1e-4, rtol: 1e-3 });
  }
  console.log(`${half.size} gradients vs PyTorch: max |diff| ${worst.toExponential(2)}`);
  assertEquals(half.size, 2 + 9 * 2); // embedding, final norm, 9 per layer (tied: no output)
  model.free();
});

Deno.test("greedy decoding of a Gemma model with the KV cache equals the full forward's argmax", () => {
  const hf = loadHfCheckpoint(GEMMA);
  const prompt = new Int32Array([12, 25, 6, 37]); // its greedy continuation changes token (37 -> 15)
  const steps = 8;
  const continuation = checkCachedGreedy(hf, prompt, steps, { argmax: true });
  console.log(`greedy continuation: ${continuation.join(" ")}`);
});

Deno.test("FullModelHFCheckpointer with model_type GEMMA saves a GemmaForCausalLM that reloads bitwise", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const ck = checkpointer({ checkpoint_dir: GEMMA, output_dir: tmp, model_type: "GEMMA" });
    const loaded = ck.load();
    const spec = build("torchtune.models.gemma.gemma", {
      vocab_size: 48,
      num_layers: 2,
      num_heads: 4,
      head_dim: 8,
      num_kv_heads: 1,
      embed_dim: 24,
      intermediate_dim: 40,
      max_seq_len: 64,
      attn_dropout: 0,
      norm_eps: 1e-6,
      rope_base: 10000,
      norm_embeddings: true,
    });
    checkSameArchitecture(spec.config, loaded.config, "checkpointer");
    const dir = ck.save({
      stateDict: loaded.stateDict,
      epoch: 0,
      config: { ...spec.config, ropeLayout: loaded.config.ropeLayout },
    });
    const json = JSON.parse(Deno.readTextFileSync(join(dir, "config.json")));
    assertEquals(json.architectures, ["GemmaForCausalLM"]);
    assertEquals([json.model_type, json.head_dim, json.hidden_activation], [
      "gemma",
      8,
      "gelu_pytorch_tanh",
    ]);
    // the written file holds the input's tensors bit for bit (no lm_head: tied)
    const a = readSafetensors(join(GEMMA, "model.safetensors"));
    const b = readSafetensors(join(dir, "model.safetensors"));
    assertEquals([...b.keys()].sort(), [...a.keys()].sort());
    for (const [k, t] of a) bitwise(k, b.get(k)!.data, t.data);
    const again = loadHfCheckpoint(dir);
    assertEquals(again.config, loaded.config);
    for (const [k, t] of loaded.stateDict) bitwise(k, again.stateDict.get(k)!.data, t.data);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("Gemma checkpoints that do not fit give one-line TuneErrors", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const cfg = JSON.parse(Deno.readTextFileSync(join(GEMMA, "config.json")));
    Deno.copyFileSync(join(GEMMA, "model.safetensors"), join(tmp, "model.safetensors"));
    const write = (j: Record<string, unknown>) =>
      Deno.writeTextFileSync(join(tmp, "config.json"), JSON.stringify(j));
    // head_dim dropped: q_proj (32, 24) no longer fits hidden_size / heads = 6
    write({ ...cfg, head_dim: undefined });
    throws(() => loadHfCheckpoint(tmp), oneLine("layers.0.attn.q_proj.weight"));
    // Gemma 2 features
    write({ ...cfg, final_logit_softcapping: 30 });
    throws(() => loadHfCheckpoint(tmp), oneLine("Gemma 2"));
    write({ ...cfg, hidden_activation: "gelu" });
    throws(() => loadHfCheckpoint(tmp), oneLine("hidden_activation"));
    // a Llama builder against the Gemma checkpoint
    const hf = loadHfCheckpoint(GEMMA);
    const llama = build("tune.models.llama", {
      vocab_size: 48,
      num_layers: 2,
      num_heads: 4,
      num_kv_heads: 1,
      embed_dim: 24,
      intermediate_dim: 40,
      max_seq_len: 64,
      norm_eps: 1e-6,
      rope_base: 10000,
      tie_word_embeddings: true,
      qkv_bias: false,
      rope_layout: "half",
      attn_dropout: 0,
    });
    throws(
      () => checkSameArchitecture(llama.config, hf.config, "checkpointer"),
      oneLine("headSize"),
    );
    // a Gemma model saved as a Llama checkpoint
    throws(() => hfConfigJson(hf.config, { modelType: "LLAMA2" }), oneLine("model_type=GEMMA"));
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

for (const ckpt of [false, true]) {
  Deno.test(`trainStep() of a Gemma model on group windows equals lossAndBackward bitwise (checkpointing ${ckpt})`, async () => {
    const hf = loadHfCheckpoint(GEMMA);
    const fx = loadFixture("checkpoint_hf_gemma_expected");
    const tokens = fx.i32("train_tokens"), targets = fx.i32("train_targets");
    const be = new CpuBackend();
    const spec = { name: "g", config: hf.config, lora: null };
    const opts = { batch: 2, seqLen: 6, activationCheckpointing: ckpt };
    const ref = createLlama(be, spec, opts);
    ref.loadStateDict(hf.stateDict);
    const z = createLlama(be, spec, { ...opts, optimizerMoments: false, groupWindows: 1 });
    z.base.materialize();
    z.loadStateDict(hf.stateDict);
    const sharded = new ShardedOptimizer(
      be,
      z.trainable,
      new AdamW(be, z.trainable, ADAMW_DEFAULTS),
    );
    sharded.takeParams();
    z.trainable.release();
    z.groupHooks = sharded;
    ref.zeroGrad();
    sharded.zeroGrads();
    const count = targets.filter((t) => t !== -100).length;
    const r = ref.lossAndBackward(tokens, targets, 1 / count);
    const zr = await z.trainStep({ tokens, targets }, crossEntropyHead(1 / count));
    assertEquals(zr, r);
    const want = be.download(ref.trainable.grads!) as Float32Array;
    const got = (be.download(sharded.grads) as Float32Array).subarray(0, want.length);
    bitwise("windowed gradients", got, want);
    sharded.free();
    ref.free();
    z.free();
  });
}

Deno.test("a Gemma LoRA run saves a PEFT adapter and merged GemmaForCausalLM files that reload bitwise and give the LoRA model's logits", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const args = { checkpoint_dir: GEMMA, output_dir: join(tmp, "out"), model_type: "GEMMA" };
    const ck = checkpointer(args);
    const base = ck.load();
    const lora: LoraConfig = {
      attnModules: ["q_proj", "k_proj", "v_proj", "output_proj"],
      applyToMlp: true,
      applyToOutput: false,
      rank: 2,
      alpha: 4,
      dropout: 0,
    };
    const adapter: StateDict = new Map();
    let s = 7;
    for (const [name, shape] of loraParamShapes(base.config, lora)) {
      const data = Float32Array.from({ length: shape[0] * shape[1] }, () => {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
        return (s / 2 ** 32 - 0.5) * 0.4;
      });
      adapter.set(name, { shape, data });
    }
    // q_proj's lora_b is (NH*HS, r) = (32, 2), not (dim, r)
    assertEquals(adapter.get("layers.0.attn.q_proj.lora_b.weight")!.shape, [32, 2]);
    const merged = mergeLora(base.stateDict, adapter, lora);
    const dir = ck.save({ stateDict: merged, adapter: { stateDict: adapter, lora }, epoch: 0 });
    const files = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assertEquals(files, [
      "adapter_config.json",
      "adapter_model.safetensors",
      "config.json",
      "model.safetensors",
    ]);
    const peft = readSafetensors(join(dir, "adapter_model.safetensors"));
    assert(peft.has("base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight"));
    const re = checkpointer({ ...args, adapter_checkpoint: dir }).load();
    for (const [n, t] of adapter) bitwise(`reloaded ${n}`, re.adapter!.get(n)!.data, t.data);
    const back = loadHfCheckpoint(dir);
    assertEquals(back.config, base.config);
    for (const [n, t] of merged) bitwise(`merged ${n}`, back.stateDict.get(n)!.data, t.data);
    // the LoRA model (base + adapters) and the merged model give the same logits
    const tokens = loadFixture("checkpoint_hf_gemma_expected").i32("tokens");
    const be = new CpuBackend();
    const m = createLlama(be, { name: "g", config: base.config, lora }, {
      batch: 1,
      seqLen: tokens.length,
      training: false,
    });
    m.loadStateDict(new Map([...base.stateDict, ...adapter]));
    const withLora = (be.download(m.forward(tokens)) as Float32Array).slice();
    m.free();
    const fromMerged = fullLogits(back.stateDict, back.config, tokens);
    const w = worstError(withLora, fromMerged, 1e-5, 1e-4);
    console.log(`LoRA model vs merged Gemma logits: max |diff| ${w.maxAbs.toExponential(2)}`);
    assertClose("lora vs merged logits", withLora, fromMerged, { atol: 1e-5, rtol: 1e-4 });
    const plain = fullLogits(base.stateDict, base.config, tokens);
    assert(
      worstError(plain, fromMerged, 1e-5, 1e-4).maxAbs > 1e-2,
      "the adapters change the logits",
    );
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});
