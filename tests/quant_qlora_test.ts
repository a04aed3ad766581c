/**
 * A QLoRA model (lora.quantizeBase: every decoder linear's base in NF4) vs PyTorch LoRA over
 * the NF4-dequantized base (tests/reference/qlora_reference.py): 10 AdamW steps of 2
 * micro-batches with dropout 0.1 on a tiny Llama whose linears NF4 accepts (dim 128).
 * Tolerances: losses 1e-5 abs, gradient norms rtol 1e-4, final adapters atol 1e-4 rtol 1e-3;
 * the stored dequantized base bitwise; the merged model's logits vs the NF4 + adapter model's
 * atol 1e-5 rtol 1e-4 (fp32 on the CPU: the merge only reorders the sum).
 */
import assert from "node:assert/strict";
import { assertClose, type Fixture, loadFixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { createLlama, type LlamaModel } from "../src/models/llama/model.ts";
import type { StateDict } from "../src/params/state_dict.ts";
import { mergeLoraHost } from "../src/modules/lora.ts";
import {
  fixtureConfig,
  fixtureLora,
  maxAbsDiff,
  prefixedStateDict,
  trainOnFixture,
} from "./_model_helpers.ts";
import { hashedTensor } from "./_quant_helpers.ts";
import { baseLayout, loraSites } from "../src/models/llama/layout.ts";
import { TuneError } from "../src/errors.ts";

const fx = loadFixture("model_train_qlora");

function qloraModel(be: CpuBackend, f: Fixture, quantizeBase = true): LlamaModel {
  const lora = { ...fixtureLora(f), quantizeBase };
  return createLlama(be, { name: "tiny_qlora", config: fixtureConfig(f), lora }, {
    batch: f.meta<number>("B"),
    seqLen: f.meta<number>("T"),
    seed: lora.seed,
  });
}

/** The base weights the reference made with `hashed` (not stored in the fixture). */
function baseWeights(f: Fixture): StateDict {
  const cfg = fixtureConfig(f);
  const specs = f.meta<Record<string, [number, number, number]>>("weights");
  const sd: StateDict = new Map();
  for (const e of baseLayout(cfg).entries) {
    const [seed, scale, offset] = specs[e.name];
    const data = hashedTensor(e.shape, seed, scale);
    for (let i = 0; i < data.length; i++) data[i] = Math.fround(data[i] + offset);
    sd.set(e.name, { shape: [...e.shape], data });
  }
  return sd;
}

Deno.test("a QLoRA model keeps its decoder linears in NF4 (0.52 bytes a weight) and dequantizes them bitwise as the reference", () => {
  const be = new CpuBackend();
  const model = qloraModel(be, fx);
  const sd = baseWeights(fx);
  for (const [n, t] of prefixedStateDict(fx, "init.")) sd.set(n, t);
  model.loadStateDict(sd);
  const nf4 = model.nf4!;
  assert.equal(nf4.names.length, 14, "7 linears in each of 2 layers");
  assert.ok(!model.base.layout.has("layers.0.attn.q_proj.weight"), "not in the dense base");
  const q = model.stateDict().get("layers.0.attn.q_proj.weight")!;
  const want = fx.f32("deq.layers.0.attn.q_proj.weight");
  assert.equal(maxAbsDiff(q.data, want), 0, "dequantized q_proj equals the reference bitwise");
  const perWeight = nf4.bytes() / nf4.numel();
  console.log(
    `qlora: ${nf4.numel()} NF4 weights in ${nf4.bytes()} bytes (${
      perWeight.toFixed(4)
    } bytes each); model parameters ${model.memory().parameters} bytes`,
  );
  assert.ok(perWeight > 0.51 && perWeight < 0.52);
  model.free();
});

Deno.test("QLoRA training matches PyTorch LoRA over the dequantized base over 10 steps (losses, grad norms, adapters, merged logits)", () => {
  const be = new CpuBackend();
  const model = qloraModel(be, fx);
  const sd = baseWeights(fx);
  for (const [n, t] of prefixedStateDict(fx, "init.")) sd.set(n, t);
  model.loadStateDict(sd);
  const { losses, norms } = trainOnFixture(model, be, fx);
  const lossDiff = maxAbsDiff(losses, fx.f32("losses"));
  console.log(`qlora: losses ${losses.map((l) => l.toFixed(5)).join(" ")}`);
  console.log(`qlora: max |loss diff| over ${losses.length} steps ${lossDiff.toExponential(2)}`);
  assert.ok(lossDiff <= 1e-5, `qlora: loss diff ${lossDiff}`);
  assertClose("qlora grad norms", norms, fx.f32("grad_norms"), { atol: 0, rtol: 1e-4 });
  let worst = 0;
  const ad = model.adapterStateDict();
  for (const [n, t] of ad) {
    const ref = fx.f32("final." + n);
    assertClose(`final ${n}`, t.data, ref, { atol: 1e-4, rtol: 1e-3 });
    worst = Math.max(worst, maxAbsDiff(t.data, ref));
  }
  console.log(
    `qlora: worst final adapter |diff| ${worst.toExponential(2)} over ${ad.size} tensors`,
  );

  // merged = dequantized base + (alpha / r) B A, and it gives the NF4 + adapter model's logits
  const cfg = fixtureConfig(fx), lora = fixtureLora(fx);
  const merged = model.mergedStateDict();
  const deq = model.stateDict();
  for (const s of loraSites(cfg, lora)) {
    const w = `${s.prefix}.weight`;
    const a = ad.get(`${s.prefix}.lora_a.weight`)!.data,
      b = ad.get(`${s.prefix}.lora_b.weight`)!.data;
    const want = mergeLoraHost(deq.get(w)!.data, a, b, s.outDim, s.inDim, lora.rank, lora.alpha);
    assert.equal(maxAbsDiff(merged.get(w)!.data, want), 0, `merged ${w}`);
  }
  const plain = createLlama(be, { name: "tiny_merged", config: cfg, lora: null }, {
    batch: fx.meta<number>("B"),
    seqLen: fx.meta<number>("T"),
    training: false,
  });
  plain.loadStateDict(merged);
  const N = fx.meta<number>("B") * fx.meta<number>("T");
  const tokens = fx.i32("tokens").subarray(0, N);
  const a = be.download(model.forward(tokens)) as Float32Array;
  const b = be.download(plain.forward(tokens)) as Float32Array;
  assertClose("merged vs NF4 + adapter logits", b, a, { atol: 1e-5, rtol: 1e-4 });
  console.log(`qlora: merged model logits |diff| ${maxAbsDiff(a, b).toExponential(2)}`);
  plain.free();
  model.free();
});

Deno.test("createLlama() refuses an NF4 base torchao cannot quantize in one line (QDoRA: tests/quant_qdora_test.ts)", () => {
  const be = new CpuBackend();
  const cfg = { ...fixtureConfig(fx), dim: 64, hiddenDim: 128 };
  assert.throws(
    () =>
      createLlama(
        be,
        { name: "q", config: cfg, lora: { ...fixtureLora(fx), quantizeBase: true } },
        {
          batch: 1,
          seqLen: 4,
        },
      ),
    (e: unknown) =>
      e instanceof TuneError && /multiple of the scaler block size 256/.test(e.message),
  );
});
