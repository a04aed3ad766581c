/**
 * Sliding-window attention (Mistral's `sliding_window`) and Gemma 2 (torchtune.models.gemma2):
 * Hugging Face checkpoints, logits, training gradients, LoRA, KV-cache generation past the
 * window and the checkpoint round trip. The fixtures are made by PyTorch
 * (tests/reference/gemma2_reference.py): a tiny MistralForCausalLM with sliding_window 4 and a
 * tiny Gemma2ForCausalLM with every Gemma 2 feature on (window 3 on the even layers, attention
 * and final soft-caps, query_pre_attn_scalar, sandwich norms, GeGLU, scaled tied embeddings),
 * both run on sequences longer than their window.
 * Tolerances: logits (fp32 forward) atol 1e-5 rtol 1e-4; loss and every gradient atol 1e-4
 * rtol 1e-3; KV-cache logits vs the full forward atol 1e-5 rtol 1e-4; save -> load bitwise.
 */
import { deepStrictEqual as assertEquals, ok as assert, throws } from "node:assert";
import { join } from "node:path";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import type { Checkpointer } from "../src/checkpoint/checkpointer.ts";
import "../src/checkpoint/components.ts";
import { loadHfCheckpoint } from "../src/checkpoint/hf_checkpoint.ts";
import { hfConfigJson, llamaConfigFromHf } from "../src/checkpoint/hf_config.ts";
import { readSafetensors } from "../src/checkpoint/safetensors.ts";
import { findComponent } from "../src/config/registry.ts";
import { TuneError } from "../src/errors.ts";
import { parameterCount } from "../src/models/builders/parameter_count.ts";
import "../src/models/components.ts";
import "../src/models/builders/qlora.ts";
import type { ModelSpec } from "../src/models/model_spec.ts";
import { tuneToHf } from "../src/checkpoint/key_mapping.ts";
import { convertRopeLayout } from "../src/checkpoint/rope_permute.ts";
import type { StateDict } from "../src/params/state_dict.ts";
import { loraParamShapes } from "../src/models/builders/param_shapes.ts";
import type { LlamaConfig } from "../src/models/llama/config.ts";
import { createLlama, crossEntropyHead } from "../src/models/llama/model.ts";
import { AdamW, ADAMW_DEFAULTS } from "../src/optim/adamw.ts";
import { ShardedOptimizer } from "../src/training/sharded.ts";
import type { LoraConfig } from "../src/models/model_spec.ts";
import { assertClose, loadFixture, worstError } from "./fixture_io.ts";
import { checkCachedGreedy, fullLogits } from "./_decode_helpers.ts";

const FIX = new URL("./fixtures/", import.meta.url).pathname;

const LORA: LoraConfig = {
  attnModules: ["q_proj", "k_proj", "v_proj", "output_proj"],
  applyToMlp: true,
  applyToOutput: false,
  rank: 2,
  alpha: 4,
  dropout: 0,
};

for (const name of ["mistral_window", "gemma2"]) {
  const dir = join(FIX, `checkpoint_hf_${name}`);
  const ref = () => loadFixture(`checkpoint_hf_${name}_expected`);

  Deno.test(`${name}: loaded logits equal PyTorch's on a sequence longer than the window`, () => {
    const hf = loadHfCheckpoint(dir);
    const R = ref();
    const tokens = R.i32("tokens");
    assert(hf.config.slidingWindow! < tokens.length);
    const got = fullLogits(hf.stateDict, hf.config, tokens);
    const w = worstError(got, R.f32("logits"), 1e-5, 1e-4);
    console.log(`${name} logits vs PyTorch: max |diff| ${w.maxAbs.toExponential(2)}`);
    assertClose(`${name} logits`, got, R.f32("logits"), { atol: 1e-5, rtol: 1e-4 });
    // control: without its window the model is far off
    const noWin = fullLogits(hf.stateDict, { ...hf.config, slidingWindow: undefined }, tokens);
    const c = worstError(noWin, R.f32("logits"), 1e-5, 1e-4).maxAbs;
    console.log(`control, window ignored: max |diff| ${c.toFixed(3)}`);
    assert(c > 1e-2);
    if (name !== "gemma2") return;
    // controls: each Gemma 2 feature changes the logits
    const controls: [string, Partial<LlamaConfig>][] = [
      ["window on every layer", { windowLayers: "all" }],
      ["no attention soft-cap", { attnSoftcap: undefined }],
      ["no final soft-cap", { finalSoftcap: undefined }],
      ["scale 1/sqrt(head_dim)", { queryPreAttnScalar: undefined }],
    ];
    for (const [what, change] of controls) {
      const off = fullLogits(hf.stateDict, { ...hf.config, ...change }, tokens);
      const e = worstError(off, R.f32("logits"), 1e-5, 1e-4).maxAbs;
      console.log(`control, ${what}: max |diff| ${e.toFixed(3)}`);
      assert(e > 1e-2, what);
    }
  });

  Deno.test(`${name}: lossAndBackward() gives PyTorch's loss and every gradient (window < T)`, () => {
    const hf = loadHfCheckpoint(dir);
    const R = ref();
    const tokens = R.i32("train_tokens"), targets = R.i32("train_targets");
    const be = new CpuBackend();
    const model = createLlama(be, { name: "m", config: hf.config, lora: null }, {
      batch: 2,
      seqLen: 6,
    });
    model.loadStateDict(hf.stateDict);
    model.zeroGrad();
    const count = targets.filter((t) => t !== -100).length;
    const r = model.lossAndBackward(tokens, targets, 1 / count);
    const loss = r.lossSum / r.tokens;
    console.log(`${name} loss ${loss} vs PyTorch ${R.f32("loss")[0]}`);
    assertClose("loss", new Float32Array([loss]), R.f32("loss"), { atol: 1e-4, rtol: 1e-3 });
    const grads: StateDict = new Map();
    for (const n of model.trainableNames()) {
      const data = (be.download(model.base.grad(n)!) as Float32Array).slice();
      grads.set(n, { shape: [...model.base.layout.get(n)!.shape], data });
    }
    const half = convertRopeLayout(grads, hf.config, "half");
    let worst = 0;
    for (const [n, t] of half) {
      const want = R.f32(`grad.${tuneToHf(n, hf.config)}`);
      worst = Math.max(worst, worstError(t.data, want, 1e-4, 1e-3).maxAbs);
      assertClose(`grad ${n}`, t.data, want, { atol: 1e-4, rtol: 1e-3 });
    }
    console.log(`${half.size} gradients vs PyTorch: max |diff| ${worst.toExponential(2)}`);
    assertEquals(half.size, hf.stateDict.size);
    model.free();
  });

  Deno.test(`${name}: LoRA on q, k, v, o, gate, up, down gives PyTorch's loss and adapter gradients`, () => {
    const hf = loadHfCheckpoint(dir);
    const R = ref();
    const tokens = R.i32("train_tokens"), targets = R.i32("train_targets");
    const hfOf = new Map<string, string>();
    const halfSd: StateDict = new Map();
    for (const [n, shape] of loraParamShapes(hf.config, LORA)) {
      const prefix = n.replace(/\.lora_[ab]\.weight$/, "");
      const key = `${n.includes(".lora_a.") ? "lora_A" : "lora_B"}.${
        tuneToHf(`${prefix}.weight`, hf.config)
      }`;
      hfOf.set(n, key);
      halfSd.set(n, { shape, data: R.f32(key) });
    }
    const adapters = convertRopeLayout(halfSd, { ...hf.config, ropeLayout: "half" }, "interleaved");
    const be = new CpuBackend();
    const model = createLlama(be, { name: "m", config: hf.config, lora: LORA }, {
      batch: 2,
      seqLen: 6,
    });
    model.loadStateDict(new Map([...hf.stateDict, ...adapters]));
    model.zeroGrad();
    const count = targets.filter((t) => t !== -100).length;
    const r = model.lossAndBackward(tokens, targets, 1 / count);
    const loss = r.lossSum / r.tokens;
    console.log(`${name} LoRA loss ${loss} vs PyTorch ${R.f32("lora_loss")[0]}`);
    assertClose("lora loss", new Float32Array([loss]), R.f32("lora_loss"), {
      atol: 1e-4,
      rtol: 1e-3,
    });
    const grads: StateDict = new Map();
    for (const n of model.trainableNames()) {
      const data = (be.download(model.adapters!.grad(n)!) as Float32Array).slice();
      grads.set(n, { shape: [...model.adapters!.layout.get(n)!.shape], data });
    }
    const half = convertRopeLayout(grads, hf.config, "half");
    let worst = 0;
    for (const [n, t] of half) {
      const want = R.f32(`grad.${hfOf.get(n)}`);
      worst = Math.max(worst, worstError(t.data, want, 1e-4, 1e-3).maxAbs);
      assertClose(`grad ${n}`, t.data, want, { atol: 1e-4, rtol: 1e-3 });
    }
    console.log(`${half.size} adapter gradients vs PyTorch: max |diff| ${worst.toExponential(2)}`);
    assertEquals(half.size, 2 * 7 * hf.config.nLayers);
    model.free();
  });

  Deno.test(`${name}: KV-cache greedy decoding equals the full forward's argmax past the window`, () => {
    const hf = loadHfCheckpoint(dir);
    const prompt = new Int32Array([12, 25, 6, 37, 2]);
    const steps = 9;
    assert(prompt.length + steps > 2 * hf.config.slidingWindow!);
    const continuation = checkCachedGreedy(hf, prompt, steps, { argmax: true });
    console.log(`${name} greedy continuation: ${continuation.join(" ")}`);
    assert(new Set(continuation).size > 1, "the continuation changes token");
  });
}

function build(name: string, args: Record<string, unknown> = {}): ModelSpec {
  const c = findComponent(name);
  if (!c) throw new Error(`${name} is not registered`);
  return c.build(args) as ModelSpec;
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

Deno.test("gemma2 builders have Hugging Face's architecture and the published parameter counts", () => {
  const s = build("torchtune.models.gemma2.gemma2_2b").config;
  assertEquals(
    [s.dim, s.nLayers, s.nHeads, s.nKvHeads, s.headDim, s.hiddenDim, s.vocabSize],
    [2304, 26, 8, 4, 256, 9216, 256000],
  );
  assertEquals(
    [s.slidingWindow, s.windowLayers, s.attnSoftcap, s.finalSoftcap, s.queryPreAttnScalar],
    [4096, "even", 50, 30, 256],
  );
  assertEquals([s.postNorms, s.tiedEmbeddings, s.embedScale, s.normOffset, s.hiddenAct], [
    true,
    true,
    true,
    1,
    "gelu_tanh",
  ]);
  assertEquals(build("torchtune.models.gemma2.gemma2_27b").config.queryPreAttnScalar, 144);
  // google/gemma-2-{2b,9b,27b} model cards (tied embeddings counted once)
  const counts: [string, number][] = [
    ["torchtune.models.gemma2.gemma2_2b", 2_614_341_888],
    ["torchtune.models.gemma2.gemma2_9b", 9_241_705_984],
    ["torchtune.models.gemma2.gemma2_27b", 27_227_128_320],
  ];
  for (const [n, want] of counts) assertEquals(parameterCount(build(n)).total, want, n);
  const l = build("torchtune.models.gemma2.lora_gemma2_9b", {
    lora_attn_modules: ["q_proj", "v_proj"],
    apply_lora_to_mlp: true,
  });
  assert(l.lora !== null && l.config.postNorms);
  const q = build("torchtune.models.gemma2.qlora_gemma2_27b", { lora_attn_modules: ["q_proj"] });
  assertEquals(q.name, "qlora_gemma2_27b");
});

Deno.test("FullModelHFCheckpointer with model_type GEMMA2 saves a Gemma2ForCausalLM that reloads bitwise", () => {
  const dir = join(FIX, "checkpoint_hf_gemma2");
  const tmp = Deno.makeTempDirSync();
  try {
    const ck = findComponent("torchtune.training.FullModelHFCheckpointer")!.build({
      checkpoint_dir: dir,
      checkpoint_files: null,
      adapter_checkpoint: null,
      recipe_checkpoint: null,
      resume_from_checkpoint: false,
      safe_serialization: true,
      output_dir: tmp,
      model_type: "GEMMA2",
    }) as Checkpointer;
    const loaded = ck.load();
    const out = ck.save({ stateDict: loaded.stateDict, epoch: 0, config: loaded.config });
    const json = JSON.parse(Deno.readTextFileSync(join(out, "config.json")));
    assertEquals(
      [
        json.architectures,
        json.model_type,
        json.sliding_window,
        json.attn_logit_softcapping,
        json.final_logit_softcapping,
        json.query_pre_attn_scalar,
        json.head_dim,
      ],
      [["Gemma2ForCausalLM"], "gemma2", 3, 2, 3, 12, 8],
    );
    const a = readSafetensors(join(dir, "model.safetensors"));
    const b = readSafetensors(join(out, "model.safetensors"));
    assertEquals([...b.keys()].sort(), [...a.keys()].sort());
    for (const [k, t] of a) bitwise(k, b.get(k)!.data, t.data);
    const again = loadHfCheckpoint(out);
    assertEquals(again.config, loaded.config);
    for (const [k, t] of loaded.stateDict) bitwise(k, again.stateDict.get(k)!.data, t.data);
    // a Gemma 2 model is only written as Gemma2ForCausalLM, and GEMMA2 only for one
    throws(() => hfConfigJson(loaded.config, { modelType: "GEMMA" }), oneLine("GEMMA2"));
    throws(
      () => hfConfigJson({ ...loaded.config, postNorms: undefined }, { modelType: "GEMMA2" }),
      oneLine("GEMMA2"),
    );
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test("Gemma 2 config.json keys tune cannot run give one-line TuneErrors; absent keys take Gemma2Config's defaults", () => {
  const json = JSON.parse(Deno.readTextFileSync(join(FIX, "checkpoint_hf_gemma2", "config.json")));
  const layerTypes = ["full_attention", "sliding_attention", "full_attention"];
  throws(
    () => llamaConfigFromHf({ ...json, layer_types: layerTypes }, "c.json"),
    oneLine("layer_types"),
  );
  throws(
    () => llamaConfigFromHf({ ...json, attn_logit_softcapping: -1 }, "c.json"),
    oneLine("attn_logit_softcapping"),
  );
  const d = { ...json };
  for (const k of ["attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar"]) {
    delete d[k];
  }
  const c = llamaConfigFromHf(d, "c.json");
  assertEquals([c.attnSoftcap, c.finalSoftcap, c.queryPreAttnScalar], [50, 30, 256]);
  const none = llamaConfigFromHf(
    { ...json, attn_logit_softcapping: null, sliding_window: null },
    "c.json",
  );
  assertEquals([none.attnSoftcap, none.slidingWindow], [undefined, undefined]);
  // Gemma 2 keys on a Gemma 1 architecture
  throws(
    () => llamaConfigFromHf({ ...json, architectures: ["GemmaForCausalLM"] }, "c.json"),
    oneLine("Gemma2ForCausalLM"),
  );
});

for (const ckpt of [false, true]) {
  Deno.test(`trainStep() of a Gemma 2 model on group windows equals lossAndBackward bitwise (checkpointing ${ckpt})`, async () => {
    const hf = loadHfCheckpoint(join(FIX, "checkpoint_hf_gemma2"));
    const R = loadFixture("checkpoint_hf_gemma2_expected");
    const tokens = R.i32("train_tokens"), targets = R.i32("train_targets");
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
    // and equal to PyTorch's loss
    assertClose("loss", new Float32Array([r.lossSum / r.tokens]), R.f32("loss"), {
      atol: 1e-4,
      rtol: 1e-3,
    });
    sharded.free();
    ref.free();
    z.free();
  });
}
