/**
 * Qwen3 (torchtune.models.qwen3): builders, Hugging Face Qwen3ForCausalLM checkpoints
 * (model_type QWEN3), training gradients, KV-cache generation, LoRA and the sharded path. The
 * fixtures are made by PyTorch (tests/reference/qwen3_reference.py): a tiny Qwen3ForCausalLM
 * with per-head q/k RMSNorm, head_dim 8 != hidden_size 24 / 4 heads, 2 key/value heads, no q/k/v
 * bias, an untied lm_head, and transformers' Qwen3 forward written out in fp32 torch.
 * Tolerances: logits (fp32 forward) atol 1e-5 rtol 1e-4; loss and every gradient atol 1e-4
 * rtol 1e-3; KV-cache logits vs the full forward atol 1e-5 rtol 1e-4; save -> load round trip
 * bitwise; the ZeRO-3 path (trainStep on group windows) bitwise equal to lossAndBackward.
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
import { createLlama, crossEntropyHead } from "../src/models/llama/model.ts";
import type { LoraConfig, ModelSpec } from "../src/models/model_spec.ts";
import { AdamW, ADAMW_DEFAULTS } from "../src/optim/adamw.ts";
import { ShardedOptimizer } from "../src/training/sharded.ts";
import { assertClose, loadFixture, worstError } from "./fixture_io.ts";
import { checkCachedGreedy, fullLogits } from "./_decode_helpers.ts";

const FIX = new URL("./fixtures/", import.meta.url).pathname;
const QWEN3 = join(FIX, "checkpoint_hf_qwen3");

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

const TINY = loadFixture("checkpoint_hf_qwen3_expected");

Deno.test("qwen3 builders have Hugging Face's architecture (head_dim 128, q/k norms) and the published parameter counts", () => {
  const s = build("torchtune.models.qwen3.qwen3_0_6b_base").config;
  assertEquals(
    [s.dim, s.nLayers, s.nHeads, s.nKvHeads, s.headDim, s.hiddenDim, s.vocabSize],
    [1024, 28, 16, 8, 128, 3072, 151936],
  );
  assertEquals([s.qkNorm, s.qkvBias, s.tiedEmbeddings, s.maxSeqLen, s.ropeTheta, s.normEps], [
    true,
    false,
    true,
    32768,
    1000000,
    1e-6,
  ]);
  assertEquals(build("torchtune.models.qwen3.qwen3_0_6b_instruct").config.maxSeqLen, 40960);
  // 8B: 4096 / 32 heads is already 128
  const b8 = build("torchtune.models.qwen3.qwen3_8b_instruct").config;
  assertEquals([b8.headDim, b8.tiedEmbeddings], [undefined, false]);
  // Hugging Face model cards (tied embeddings counted once)
  const counts: [string, number][] = [
    ["torchtune.models.qwen3.qwen3_4b_base", 4_022_468_096],
    ["torchtune.models.qwen3.qwen3_8b_base", 8_190_735_360],
    ["torchtune.models.qwen3.qwen3_14b_instruct", 14_768_307_200],
    ["torchtune.models.qwen3.qwen3_32b", 32_762_123_264],
  ];
  for (const [name, want] of counts) assertEquals(parameterCount(build(name)).total, want, name);
  // q_proj of qwen3_0_6b is (NH*HS, C) = (2048, 1024); LoRA on it adds r * (1024 + 2048)
  const l = build("torchtune.models.qwen3.lora_qwen3_0_6b_instruct", {
    lora_attn_modules: ["q_proj"],
    lora_rank: 8,
  });
  assertEquals(parameterCount(l).lora, 28 * 8 * (1024 + 2048));
});

Deno.test("`loadHfCheckpoint()` reads Qwen3ForCausalLM and gives transformers' Qwen3 logits", () => {
  const hf = loadHfCheckpoint(QWEN3);
  const c = hf.config;
  assertEquals([c.dim, c.nHeads, c.nKvHeads, c.headDim, c.qkNorm, c.qkvBias, c.tiedEmbeddings], [
    24,
    4,
    2,
    8,
    true,
    false,
    false,
  ]);
  assertEquals(hf.stateDict.get("layers.1.attn.q_norm.scale")!.shape, [8]);
  const tokens = TINY.i32("tokens");
  const ref = TINY.f32("logits");
  const got = fullLogits(hf.stateDict, c, tokens);
  console.log(
    `Qwen3 loaded vs PyTorch logits: max |diff| ${
      worstError(got, ref, 1e-5, 1e-4).maxAbs.toExponential(2)
    }`,
  );
  assertClose("qwen3 logits", got, ref, { atol: 1e-5, rtol: 1e-4 });
  // Controls: the norms matter, and so does permuting their scales with the q/k rows
  const be = new CpuBackend();
  const noNorm = createLlama(be, { name: "q", config: { ...c, qkNorm: false }, lora: null }, {
    batch: 1,
    seqLen: tokens.length,
    training: false,
  });
  noNorm.loadStateDict(hf.stateDict, { strict: false });
  const w = worstError(be.download(noNorm.forward(tokens)) as Float32Array, ref, 1e-5, 1e-4);
  noNorm.free();
  console.log(`control, no q/k norms: max |diff| ${w.maxAbs.toExponential(2)}`);
  assert(w.maxAbs > 1e-2);
  const raw = readSafetensors(join(QWEN3, "model.safetensors"));
  const unpermuted = new Map(hf.stateDict);
  for (const n of ["q_norm", "k_norm"]) {
    for (const l of [0, 1]) {
      const t = raw.get(`model.layers.${l}.self_attn.${n}.weight`)!;
      unpermuted.set(`layers.${l}.attn.${n}.scale`, { shape: t.shape, data: t.data });
    }
  }
  const u = worstError(fullLogits(unpermuted, c, tokens), ref, 1e-5, 1e-4);
  console.log(
    `control, norm scales not permuted to interleaved: max |diff| ${u.maxAbs.toExponential(2)}`,
  );
  assert(u.maxAbs > 1e-2);
});

Deno.test("`lossAndBackward()` of a Qwen3 model gives PyTorch's loss and every gradient", () => {
  const hf = loadHfCheckpoint(QWEN3);
  const tokens = TINY.i32("train_tokens"), targets = TINY.i32("train_targets");
  const be = new CpuBackend();
  const model = createLlama(be, { name: "q", config: hf.config, lora: null }, {
    batch: 2,
    seqLen: 6,
  });
  model.loadStateDict(hf.stateDict);
  model.zeroGrad();
  const count = targets.filter((t) => t !== -100).length;
  const r = model.lossAndBackward(tokens, targets, 1 / count);
  const loss = r.lossSum / r.tokens;
  console.log(`Qwen3 loss ${loss} vs PyTorch ${TINY.f32("loss")[0]}`);
  assertClose("loss", new Float32Array([loss]), TINY.f32("loss"), { atol: 1e-4, rtol: 1e-3 });
  // gradients in tune names and interleaved rows -> Hugging Face names and rotate-half rows
  const grads: StateDict = new Map();
  for (const name of model.trainableNames()) {
    const data = (be.download(model.base.grad(name)!) as Float32Array).slice();
    grads.set(name, { shape: [...model.base.layout.get(name)!.shape], data });
  }
  const half = convertRopeLayout(grads, hf.config, "half");
  let worst = 0;
  for (const [name, t] of half) {
    const ref = TINY.f32(`grad.${tuneToHf(name)}`);
    worst = Math.max(worst, worstError(t.data, ref, 1e-4, 1e-3).maxAbs);
    assertClose(`grad ${name}`, t.data, ref, { atol: 1e-4, rtol: 1e-3 });
  }
  console.log(`${half.size} gradients vs PyTorch: max |diff| ${worst.toExponential(2)}`);
  assertEquals(half.size, 3 + 11 * 2); // embedding, final norm, output; 11 per layer
  model.free();
});

Deno.test("`lossAndBackward()` of a Qwen3 LoRA model (q, k, v, o, gate, up, down, output) gives PyTorch's loss and every adapter gradient", () => {
  const hf = loadHfCheckpoint(QWEN3);
  const tokens = TINY.i32("train_tokens"), targets = TINY.i32("train_targets");
  const lora: LoraConfig = {
    attnModules: ["q_proj", "k_proj", "v_proj", "output_proj"],
    applyToMlp: true,
    applyToOutput: true,
    rank: 2,
    alpha: 4,
    dropout: 0,
  };
  // the fixture's adapters, Hugging Face names and rotate-half rows -> tune's
  const hfOf = new Map<string, string>(); // tune adapter name -> fixture key suffix
  const halfSd: StateDict = new Map();
  for (const [name, shape] of loraParamShapes(hf.config, lora)) {
    const prefix = name.replace(/\.lora_[ab]\.weight$/, "");
    const hfName = tuneToHf(`${prefix}.weight`)!;
    const key = `${name.includes(".lora_a.") ? "lora_A" : "lora_B"}.${hfName}`;
    hfOf.set(name, key);
    halfSd.set(name, { shape, data: TINY.f32(key) });
  }
  const adapters = convertRopeLayout(halfSd, { ...hf.config, ropeLayout: "half" }, "interleaved");
  const be = new CpuBackend();
  const model = createLlama(be, { name: "q", config: hf.config, lora }, { batch: 2, seqLen: 6 });
  model.loadStateDict(new Map([...hf.stateDict, ...adapters]));
  model.zeroGrad();
  const count = targets.filter((t) => t !== -100).length;
  const r = model.lossAndBackward(tokens, targets, 1 / count);
  const loss = r.lossSum / r.tokens;
  console.log(`Qwen3 LoRA loss ${loss} vs PyTorch ${TINY.f32("lora_loss")[0]}`);
  assertClose("lora loss", new Float32Array([loss]), TINY.f32("lora_loss"), {
    atol: 1e-4,
    rtol: 1e-3,
  });
  const grads: StateDict = new Map();
  for (const name of model.trainableNames()) {
    const data = (be.download(model.adapters!.grad(name)!) as Float32Array).slice();
    grads.set(name, { shape: [...model.adapters!.layout.get(name)!.shape], data });
  }
  const half = convertRopeLayout(grads, hf.config, "half");
  let worst = 0;
  for (const [name, t] of half) {
    const ref = TINY.f32(`grad.${hfOf.get(name)}`);
    worst = Math.max(worst, worstError(t.data, ref, 1e-4, 1e-3).maxAbs);
    assertClose(`grad ${name}`, t.data, ref, { atol: 1e-4, rtol: 1e-3 });
  }
  console.log(`${half.size} adapter gradients vs PyTorch: max |diff| ${worst.toExponential(2)}`);
  assertEquals(half.size, 2 * (7 * 2 + 1));
  model.free();
});

for (const ckpt of [false, true]) {
  Deno.test(`trainStep() of a Qwen3 model on group windows equals lossAndBackward bitwise (checkpointing ${ckpt})`, async () => {
    const hf = loadHfCheckpoint(QWEN3);
    const tokens = TINY.i32("train_tokens"), targets = TINY.i32("train_targets");
    const be = new CpuBackend();
    const spec = { name: "q", config: hf.config, lora: null };
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

Deno.test("greedy decoding of a Qwen3 model with the KV cache equals the full forward's argmax", () => {
  const hf = loadHfCheckpoint(QWEN3);
  const prompt = new Int32Array([12, 25, 6, 37]);
  const steps = 8;
  const continuation = checkCachedGreedy(hf, prompt, steps, { argmax: true });
  console.log(`greedy continuation: ${continuation.join(" ")}`);
  assert(new Set(continuation).size > 1, "the continuation changes token");
});

Deno.test("FullModelHFCheckpointer with model_type QWEN3 saves a Qwen3ForCausalLM that reloads bitwise", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const ck = checkpointer({ checkpoint_dir: QWEN3, output_dir: tmp, model_type: "QWEN3" });
    const loaded = ck.load();
    const dir = ck.save({ stateDict: loaded.stateDict, epoch: 0, config: loaded.config });
    const json = JSON.parse(Deno.readTextFileSync(join(dir, "config.json")));
    assertEquals([json.architectures, json.model_type, json.head_dim, json.attention_bias], [
      ["Qwen3ForCausalLM"],
      "qwen3",
      8,
      false,
    ]);
    const a = readSafetensors(join(QWEN3, "model.safetensors"));
    const b = readSafetensors(join(dir, "model.safetensors"));
    assertEquals([...b.keys()].sort(), [...a.keys()].sort());
    for (const [k, t] of a) bitwise(k, b.get(k)!.data, t.data);
    const again = loadHfCheckpoint(dir);
    assertEquals(again.config, loaded.config);
    for (const [k, t] of loaded.stateDict) bitwise(k, again.stateDict.get(k)!.data, t.data);
    // a Qwen3 model is only written as Qwen3ForCausalLM, and QWEN3 only for a Qwen3 model
    throws(() => hfConfigJson(loaded.config, { modelType: "QWEN2" }), oneLine("QWEN3"));
    throws(
      () => hfConfigJson({ ...loaded.config, qkNorm: false }, { modelType: "QWEN3" }),
      oneLine("QWEN3"),
    );
    // a Qwen2 builder against the Qwen3 checkpoint
    const qwen2 = { ...loaded.config, qkNorm: undefined };
    throws(() => checkSameArchitecture(qwen2, loaded.config, "checkpointer"), oneLine("qkNorm"));
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("a Qwen3 LoRA run (q, k, v, o, gate, up, down, output) saves a PEFT adapter and merged files that reload bitwise and give the LoRA model's logits", () => {
  const tmp = Deno.makeTempDirSync();
  try {
    const args = { checkpoint_dir: QWEN3, output_dir: join(tmp, "out"), model_type: "QWEN3" };
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
    let s = 7;
    for (const [name, shape] of loraParamShapes(base.config, lora)) {
      const data = Float32Array.from({ length: shape[0] * shape[1] }, () => {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
        return (s / 2 ** 32 - 0.5) * 0.4;
      });
      adapter.set(name, { shape, data });
    }
    assertEquals(adapter.size, 2 * (7 * 2 + 1));
    const merged = mergeLora(base.stateDict, adapter, lora);
    const dir = ck.save({ stateDict: merged, adapter: { stateDict: adapter, lora }, epoch: 0 });
    const re = checkpointer({ ...args, adapter_checkpoint: dir }).load();
    for (const [n, t] of adapter) bitwise(`reloaded ${n}`, re.adapter!.get(n)!.data, t.data);
    const back = loadHfCheckpoint(dir);
    assertEquals(back.config, base.config);
    for (const [n, t] of merged) bitwise(`merged ${n}`, back.stateDict.get(n)!.data, t.data);
    const tokens = TINY.i32("tokens");
    const be = new CpuBackend();
    const m = createLlama(be, { name: "q", config: base.config, lora }, {
      batch: 1,
      seqLen: tokens.length,
      training: false,
    });
    m.loadStateDict(new Map([...base.stateDict, ...adapter]));
    const withLora = (be.download(m.forward(tokens)) as Float32Array).slice();
    m.free();
    const fromMerged = fullLogits(back.stateDict, back.config, tokens);
    const w = worstError(withLora, fromMerged, 1e-5, 1e-4);
    console.log(`LoRA model vs merged Qwen3 logits: max |diff| ${w.maxAbs.toExponential(2)}`);
    assertClose("lora vs merged logits", withLora, fromMerged, { atol: 1e-5, rtol: 1e-4 });
    const plain = fullLogits(base.stateDict, base.config, tokens);
    assert(worstError(plain, fromMerged, 1e-5, 1e-4).maxAbs > 1e-2, "the adapters change logits");
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});
