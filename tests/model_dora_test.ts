/**
 * DoRA (use_dora, torchtune's DoRALinear) vs PyTorch (tests/reference/dora_reference.py):
 * 10 AdamW steps of 2 micro-batches on a tiny Llama with DoRA on every projection, the MLP
 * and the output (rank 4, alpha 8, dropout 0.1), magnitudes initialised from the loaded
 * base weights. Also the PEFT round trip (lora_magnitude_vector, use_dora) and the CPU ops.
 * Tolerances: per-step losses 1e-4 abs; gradient norms rtol 1e-4; final adapters atol 1e-4
 * rtol 1e-3; merged weights and eval logits atol 1e-5 rtol 1e-4; PEFT round trip bitwise.
 */
import { ok as assert } from "node:assert";
import { assertClose, loadFixture } from "./fixture_io.ts";
import type { Fixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { createLlama, type LlamaModel } from "../src/models/llama/model.ts";
import { loadPeftAdapter, mergeLora, savePeftAdapter } from "../src/checkpoint/peft.ts";
import { readSafetensors } from "../src/checkpoint/safetensors.ts";
import {
  fixtureConfig,
  fixtureLora,
  maxAbsDiff,
  prefixedStateDict,
  trainOnFixture,
} from "./_model_helpers.ts";
import { loraLayout } from "../src/models/llama/layout.ts";
import { TuneError } from "../src/errors.ts";

function doraModel(be: CpuBackend, fx: Fixture): LlamaModel {
  const lora = { ...fixtureLora(fx), useDora: true };
  return createLlama(be, { name: "tiny_dora", config: fixtureConfig(fx), lora }, {
    batch: fx.meta<number>("B"),
    seqLen: fx.meta<number>("T"),
    seed: lora.seed,
  });
}

Deno.test("createLlama() with useDora initialises magnitudes to ||W|| per row of the loaded base", () => {
  const fx = loadFixture("model_train_dora");
  const be = new CpuBackend();
  const model = doraModel(be, fx);
  const sd = prefixedStateDict(fx, "w.");
  // A and B only (as from a plain LoRA init): the magnitudes come from the loaded weights
  for (const [n, t] of prefixedStateDict(fx, "init.")) if (!n.endsWith(".magnitude")) sd.set(n, t);
  model.loadStateDict(sd);
  const ad = model.adapterStateDict();
  const mags = fx.names().filter((k) => k.startsWith("init.") && k.endsWith(".magnitude"));
  assert(mags.length === 15, `${mags.length} magnitudes in the fixture`);
  for (const k of mags) {
    const name = k.slice("init.".length);
    assertClose(`init ${name}`, ad.get(name)!.data, fx.f32(k), { atol: 1e-6, rtol: 1e-6 });
  }
  model.free();
});

Deno.test("DoRA training matches PyTorch over 10 steps (losses, grad norms, adapters, magnitudes, merged, logits)", () => {
  const fx = loadFixture("model_train_dora");
  const be = new CpuBackend();
  const model = doraModel(be, fx);
  const sd = prefixedStateDict(fx, "w.");
  for (const [n, t] of prefixedStateDict(fx, "init.")) if (!n.endsWith(".magnitude")) sd.set(n, t);
  model.loadStateDict(sd);
  const base0 = model.base.toStateDict();
  const { losses, norms } = trainOnFixture(model, be, fx);
  const lossDiff = maxAbsDiff(losses, fx.f32("losses"));
  console.log(`dora: losses ${losses.map((l) => l.toFixed(5)).join(" ")}`);
  console.log(`dora: max |loss diff| over ${losses.length} steps ${lossDiff.toExponential(2)}`);
  assert(lossDiff <= 1e-4, `dora: loss diff ${lossDiff}`);
  assertClose("dora grad norms", norms, fx.f32("grad_norms"), { atol: 0, rtol: 1e-4 });
  let worst = 0;
  const ad = model.adapterStateDict();
  assert(ad.size === 45, `${ad.size} adapter tensors (A, B, magnitude of 15 layers)`);
  for (const [n, t] of ad) {
    const ref = fx.f32("final." + n);
    assertClose(`final ${n}`, t.data, ref, { atol: 1e-4, rtol: 1e-3 });
    worst = Math.max(worst, maxAbsDiff(t.data, ref));
  }
  console.log(`dora: worst final adapter |diff| ${worst.toExponential(2)}`);
  for (const [n, t] of model.base.toStateDict()) {
    assert(maxAbsDiff(t.data, base0.get(n)!.data) === 0, `base ${n} changed`);
  }
  const merged = model.mergedStateDict();
  let worstMerged = 0;
  for (const n of fx.names().filter((k) => k.startsWith("merged."))) {
    const name = n.slice("merged.".length);
    assertClose(`merged ${name}`, merged.get(name)!.data, fx.f32(n), { atol: 1e-5, rtol: 1e-4 });
    worstMerged = Math.max(worstMerged, maxAbsDiff(merged.get(name)!.data, fx.f32(n)));
  }
  console.log(`dora: worst merged weight |diff| ${worstMerged.toExponential(2)}`);
  // mergeLora (generate's path) folds the magnitudes the same way, bitwise
  const viaPeft = mergeLora(model.base.toStateDict(), ad, fixtureLora(fx));
  for (const [n, t] of merged) {
    assert(maxAbsDiff(t.data, viaPeft.get(n)!.data) === 0, `mergeLora ${n} differs`);
  }
  assert(![...viaPeft.keys()].some((k) => k.endsWith(".magnitude")), "magnitudes left in merge");
  // eval-mode logits of the trained DoRA model
  const N = fx.meta<number>("B") * fx.meta<number>("T");
  const logits = be.download(model.forward(fx.i32("tokens").subarray(0, N)));
  assertClose("dora eval logits", logits, fx.f32("eval_logits"), { atol: 1e-5, rtol: 1e-4 });
  console.log(
    `dora: eval logits |diff| ${maxAbsDiff(logits, fx.f32("eval_logits")).toExponential(2)}`,
  );
  model.free();
});

Deno.test("savePeftAdapter() writes DoRA magnitudes as lora_magnitude_vector with use_dora, and loads them back bitwise", () => {
  const fx = loadFixture("model_train_dora");
  const cfg = fixtureConfig(fx); // interleaved: q/k rows are permuted to rotate-half on save
  const lora = { ...fixtureLora(fx), useDora: true };
  const ad = prefixedStateDict(fx, "final.");
  const dir = Deno.makeTempDirSync();
  try {
    savePeftAdapter(dir, ad, cfg, lora);
    const conf = JSON.parse(Deno.readTextFileSync(`${dir}/adapter_config.json`));
    assert(conf.use_dora === true, "use_dora in adapter_config.json");
    assert(conf.peft_type === "LORA");
    const keys = [...readSafetensors(`${dir}/adapter_model.safetensors`).keys()];
    assert(keys.length === 45, `${keys.length} tensors`);
    assert(keys.includes("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"));
    assert(keys.includes("base_model.model.model.layers.1.mlp.down_proj.lora_magnitude_vector"));
    assert(keys.includes("base_model.model.lm_head.lora_magnitude_vector"));
    const back = loadPeftAdapter(dir, cfg);
    assert(back.size === ad.size);
    for (const [n, t] of ad) {
      const u = back.get(n);
      assert(u, `${n} loaded`);
      assert(maxAbsDiff(u.data, t.data) === 0, `${n} round trip`);
    }
    // a plain LoRA adapter config says use_dora: false, as PEFT writes it
    savePeftAdapter(dir, ad, cfg, fixtureLora(fx));
    assert(JSON.parse(Deno.readTextFileSync(`${dir}/adapter_config.json`)).use_dora === false);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("loraLayout() adds a magnitude per adapted layer only with useDora", () => {
  const fx = loadFixture("model_train_dora");
  const cfg = fixtureConfig(fx);
  const plain = loraLayout(cfg, fixtureLora(fx)).entries.map((e) => e.name);
  const dora = loraLayout(cfg, { ...fixtureLora(fx), useDora: true }).entries.map((e) => e.name);
  assert(!plain.some((n) => n.endsWith(".magnitude")));
  assert(dora.length === plain.length * 3 / 2);
  assert(dora.includes("layers.0.attn.q_proj.magnitude") && dora.includes("output.magnitude"));
});

Deno.test("createLlama() with useDora rejects q/k/v biases in one line and builds with sharded windows", () => {
  const fx = loadFixture("model_train_dora");
  const be = new CpuBackend();
  const lora = { ...fixtureLora(fx), useDora: true };
  const cfg = { ...fixtureConfig(fx), qkvBias: true };
  let err: unknown = null;
  try {
    createLlama(be, { name: "bias", config: cfg, lora }, { batch: 1, seqLen: 4 });
  } catch (e) {
    err = e;
  }
  assert(err instanceof TuneError && /bias/.test(err.message) && !err.message.includes("\n"));
  // the sharded recipes' windows (their runs: tests/recipe_dora_test.ts)
  const m = createLlama(be, { name: "sharded", config: fixtureConfig(fx), lora }, {
    batch: 1,
    seqLen: 4,
    groupWindows: 2,
  });
  m.free();
});

Deno.test("doraNorm(), scaleColumns(), doraMagnitudeBackward() follow their contracts on the CPU", () => {
  const be = new CpuBackend();
  const O = 3, I = 4, N = 2;
  const w = Float32Array.from([1, 2, 3, 4, 0, 0, 0, 1, -1, 0.5, 2, 0]);
  const ba = Float32Array.from([0.5, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]);
  const mag = Float32Array.from([2, 3, 4]);
  const up = (a: Float32Array) => {
    const b = be.alloc(a.length);
    be.upload(b, a);
    return b;
  };
  const g = be.alloc(O), nrm = be.alloc(O);
  be.doraNorm(g, nrm, up(w), up(ba), up(mag), 2, O, I);
  const want = [Math.sqrt(4 + 4 + 9 + 16), Math.sqrt(4 + 4 + 4 + 9), Math.sqrt(1 + 0.25 + 4)];
  assertClose("norm", be.download(nrm), want, { atol: 1e-6, rtol: 1e-6 });
  assertClose("scale", be.download(g), want.map((n, o) => mag[o] / n), { atol: 1e-6, rtol: 1e-6 });
  const x = Float32Array.from([1, 2, 3, 4, 5, 6]); // (N, O)
  const y = be.alloc(N * O);
  be.scaleColumns(y, up(x), up(mag), N, O);
  assertClose("scaleColumns", be.download(y), [2, 6, 12, 8, 15, 24], { atol: 0, rtol: 0 });
  const dm = up(Float32Array.from([1, 1, 1]));
  be.doraMagnitudeBackward(dm, up(x), up(Float32Array.from([1, 1, 1, 2, 2, 2])), up(mag), N, O);
  assertClose("dmag", be.download(dm), [1 + 9 / 2, 1 + 12 / 3, 1 + 15 / 4], {
    atol: 1e-6,
    rtol: 0,
  });
});

Deno.test("DoRA gradients are bitwise equal with activation checkpointing and close with chunked logits", () => {
  const fx = loadFixture("model_train_dora");
  const be = new CpuBackend();
  const N = fx.meta<number>("B") * fx.meta<number>("T");
  const tokens = fx.i32("tokens").subarray(0, N), targets = fx.i32("targets").subarray(0, N);
  const grads = (opts: { activationCheckpointing?: boolean; logitChunks?: number }, p: number) => {
    const lora = { ...fixtureLora(fx), useDora: true, dropout: p };
    const m = createLlama(be, { name: "tiny_dora", config: fixtureConfig(fx), lora }, {
      batch: fx.meta<number>("B"),
      seqLen: fx.meta<number>("T"),
      seed: lora.seed,
      ...opts,
    });
    const sd = prefixedStateDict(fx, "w.");
    for (const [n, t] of prefixedStateDict(fx, "final.")) sd.set(n, t); // B != 0
    m.loadStateDict(sd);
    m.zeroGrad();
    m.lossAndBackward(tokens, targets, 1 / N);
    const g = be.download(m.trainable.grads!) as Float32Array;
    m.free();
    return g;
  };
  const plain = grads({}, 0.1);
  assert(maxAbsDiff(grads({ activationCheckpointing: true }, 0.1), plain) === 0, "checkpointing");
  // chunked logits draw the output adapter's dropout per chunk: compare without dropout
  assertClose("logitChunks 3", grads({ logitChunks: 3 }, 0), grads({}, 0), {
    atol: 1e-6,
    rtol: 1e-5,
  });
});
