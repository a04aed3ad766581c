/**
 * QDoRA (use_dora with an NF4 base, torchtune's QDoRA) vs PyTorch DoRA over the
 * NF4-dequantized base (tests/reference/qdora_reference.py): DoRA on every projection, the
 * MLP and the output of qlora_reference.py's tiny Llama (decoder linears in NF4), 10 AdamW
 * steps of 2 micro-batches with dropout 0.1. The row norms ||W + s B A|| come from the NF4
 * base dequantized 64 rows at a time. Tolerances: magnitudes initialised from the NF4 base
 * atol 1e-6 rtol 1e-6; losses 1e-5 abs; gradient norms rtol 1e-4; final adapters atol 1e-4
 * rtol 1e-3; eval logits atol 1e-5 rtol 1e-4; the merged weights equal the host DoRA merge
 * over the dequantized base bitwise, and a plain model of them gives the QDoRA model's
 * logits (atol 1e-5 rtol 1e-4).
 */
import { ok as assert } from "node:assert";
import { assertClose, type Fixture, loadFixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { createLlama, type LlamaModel } from "../src/models/llama/model.ts";
import { mergeDoraHost } from "../src/modules/dora.ts";
import type { StateDict } from "../src/params/state_dict.ts";
import {
  fixtureConfig,
  fixtureLora,
  maxAbsDiff,
  prefixedStateDict,
  trainOnFixture,
} from "./_model_helpers.ts";
import { hashedTensor } from "./_quant_helpers.ts";
import { baseLayout, loraSites } from "../src/models/llama/layout.ts";

const fx = loadFixture("model_train_qdora");

function qdoraModel(be: CpuBackend, f: Fixture): LlamaModel {
  const lora = { ...fixtureLora(f), quantizeBase: true, useDora: true };
  return createLlama(be, { name: "tiny_qdora", config: fixtureConfig(f), lora }, {
    batch: f.meta<number>("B"),
    seqLen: f.meta<number>("T"),
    seed: lora.seed,
  });
}

/** The base weights the reference made with `hashed` (not stored in the fixture). */
function baseWeights(f: Fixture): StateDict {
  const specs = f.meta<Record<string, [number, number, number]>>("weights");
  const sd: StateDict = new Map();
  for (const e of baseLayout(fixtureConfig(f)).entries) {
    const [seed, scale, offset] = specs[e.name];
    const data = hashedTensor(e.shape, seed, scale);
    for (let i = 0; i < data.length; i++) data[i] = Math.fround(data[i] + offset);
    sd.set(e.name, { shape: [...e.shape], data });
  }
  return sd;
}

/** Base + the reference's initial A and B (magnitudes: computed from the NF4 base). */
function loaded(be: CpuBackend): LlamaModel {
  const model = qdoraModel(be, fx);
  const sd = baseWeights(fx);
  for (const [n, t] of prefixedStateDict(fx, "init.")) if (!n.endsWith(".magnitude")) sd.set(n, t);
  model.loadStateDict(sd);
  return model;
}

Deno.test("createLlama() with useDora over an NF4 base initialises magnitudes to the dequantized base's row norms", () => {
  const be = new CpuBackend();
  const model = loaded(be);
  assert(model.nf4 !== null && model.nf4.names.length === 14, "decoder linears in NF4");
  const ad = model.adapterStateDict();
  const mags = fx.names().filter((k) => k.startsWith("init.") && k.endsWith(".magnitude"));
  assert(mags.length === 15, `${mags.length} magnitudes in the fixture`);
  let worst = 0;
  for (const k of mags) {
    const name = k.slice("init.".length);
    assertClose(`init ${name}`, ad.get(name)!.data, fx.f32(k), { atol: 1e-6, rtol: 1e-6 });
    worst = Math.max(worst, maxAbsDiff(ad.get(name)!.data, fx.f32(k)));
  }
  console.log(`qdora: initial magnitudes worst |diff| ${worst.toExponential(2)}`);
  model.free();
});

Deno.test("QDoRA training matches PyTorch DoRA over the dequantized base over 10 steps; the merged model gives its logits", () => {
  const be = new CpuBackend();
  const model = loaded(be);
  const { losses, norms } = trainOnFixture(model, be, fx);
  const lossDiff = maxAbsDiff(losses, fx.f32("losses"));
  console.log(`qdora: losses ${losses.map((l) => l.toFixed(5)).join(" ")}`);
  console.log(`qdora: max |loss diff| over ${losses.length} steps ${lossDiff.toExponential(2)}`);
  assert(lossDiff <= 1e-5, `qdora: loss diff ${lossDiff}`);
  assertClose("qdora grad norms", norms, fx.f32("grad_norms"), { atol: 0, rtol: 1e-4 });
  const ad = model.adapterStateDict();
  assert(ad.size === 45, `${ad.size} adapter tensors (A, B, magnitude of 15 layers)`);
  let worst = 0;
  for (const [n, t] of ad) {
    const ref = fx.f32("final." + n);
    assertClose(`final ${n}`, t.data, ref, { atol: 1e-4, rtol: 1e-3 });
    worst = Math.max(worst, maxAbsDiff(t.data, ref));
  }
  console.log(`qdora: worst final adapter |diff| ${worst.toExponential(2)}`);
  const B = fx.meta<number>("B"), T = fx.meta<number>("T");
  const tokens = fx.i32("tokens").subarray(0, B * T);
  const logits = (be.download(model.forward(tokens)) as Float32Array).slice();
  assertClose("qdora eval logits", logits, fx.f32("eval_logits"), { atol: 1e-5, rtol: 1e-4 });
  console.log(
    `qdora: eval logits |diff| ${maxAbsDiff(logits, fx.f32("eval_logits")).toExponential(2)}`,
  );

  // merged = (magnitude / ||W + s B A||) (W + s B A) over the dequantized base
  const cfg = fixtureConfig(fx), lora = fixtureLora(fx);
  const merged = model.mergedStateDict();
  const deq = model.stateDict();
  for (const s of loraSites(cfg, lora)) {
    const w = `${s.prefix}.weight`;
    const at = (k: string) => ad.get(`${s.prefix}.${k}`)!.data;
    const want = mergeDoraHost(
      deq.get(w)!.data,
      at("lora_a.weight"),
      at("lora_b.weight"),
      at("magnitude"),
      s.outDim,
      s.inDim,
      lora.rank,
      lora.alpha,
    );
    assert(maxAbsDiff(merged.get(w)!.data, want) === 0, `merged ${w}`);
  }
  assert(![...merged.keys()].some((k) => k.endsWith(".magnitude")), "magnitudes left in merge");
  const plain = createLlama(be, { name: "tiny_merged", config: cfg, lora: null }, {
    batch: B,
    seqLen: T,
    training: false,
  });
  plain.loadStateDict(merged);
  const m = be.download(plain.forward(tokens)) as Float32Array;
  assertClose("merged vs QDoRA logits", m, logits, { atol: 1e-5, rtol: 1e-4 });
  console.log(`qdora: merged model logits |diff| ${maxAbsDiff(m, logits).toExponential(2)}`);
  plain.free();
  model.free();
});
