/**
 * Loading and exporting weights: shape and name checks (TuneError naming the tensor),
 * round trips, deterministic random init, LoRA's zero-initialised B (step 0 equals the
 * base model), and the per-layer contiguous layout.
 */
import { deepStrictEqual, ok as assert } from "node:assert";
import { loadFixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { createLlama } from "../src/models/llama/model.ts";
import { baseLayout, loraLayout } from "../src/models/llama/layout.ts";
import { TuneError } from "../src/errors.ts";
import { fixtureConfig, prefixedStateDict } from "./_model_helpers.ts";
import type { LoraConfig } from "../src/models/model_spec.ts";

const LORA: LoraConfig = {
  attnModules: ["q_proj", "v_proj"],
  applyToMlp: true,
  applyToOutput: true,
  rank: 4,
  alpha: 16,
  dropout: 0,
};

function expectTuneError(f: () => unknown, re: RegExp): void {
  try {
    f();
  } catch (e) {
    assert(e instanceof TuneError, `expected a TuneError, got ${e}`);
    assert(re.test(e.message), `message "${e.message}" does not match ${re}`);
    assert(!e.message.includes("\n"), "TuneError message must be one line");
    return;
  }
  throw new Error(`expected a TuneError matching ${re}`);
}

Deno.test("loadStateDict() throws a TuneError naming the tensor, expected and found shape", () => {
  const fx = loadFixture("model_tiny_a");
  const be = new CpuBackend();
  const model = createLlama(be, { name: "tiny", config: fixtureConfig(fx), lora: null }, {
    batch: 1,
    seqLen: 4,
  });
  const sd = prefixedStateDict(fx, "w.");
  const bad = new Map(sd);
  bad.set("layers.1.mlp.w2.weight", { shape: [48, 32], data: new Float32Array(48 * 32) });
  expectTuneError(
    () => model.loadStateDict(bad),
    /layers\.1\.mlp\.w2\.weight.*\[48, 32\].*\[32, 48\]/,
  );
  const missing = new Map(sd);
  missing.delete("norm.scale");
  expectTuneError(() => model.loadStateDict(missing), /no tensor norm\.scale/);
  const extra = new Map(sd);
  extra.set("layers.0.attn.q_proj.bias", { shape: [32], data: new Float32Array(32) });
  expectTuneError(
    () => model.loadStateDict(extra),
    /layers\.0\.attn\.q_proj\.bias is not a parameter/,
  );
  model.loadStateDict(sd);
  for (const [n, t] of model.stateDict()) deepStrictEqual(t.data, sd.get(n)!.data, n);
});

Deno.test("initRandom() is deterministic for a seed and differs across seeds", () => {
  const fx = loadFixture("model_tiny_a");
  const be = new CpuBackend();
  const spec = { name: "tiny", config: fixtureConfig(fx), lora: LORA };
  const a = createLlama(be, spec, { batch: 1, seqLen: 4 });
  const b = createLlama(be, spec, { batch: 1, seqLen: 4 });
  a.initRandom(42);
  b.initRandom(42);
  const sa = a.stateDict();
  const sb = b.stateDict();
  for (const [n, t] of sa) deepStrictEqual(t.data, sb.get(n)!.data, n);
  b.initRandom(43);
  const w = "layers.0.attn.q_proj.weight";
  assert(b.stateDict().get(w)!.data[0] !== sa.get(w)!.data[0]);
  // LoRA A is kaiming-uniform U(-1/sqrt(in), 1/sqrt(in)), B is zero
  const la = sa.get("layers.0.mlp.w2.lora_a.weight")!.data; // (r, H=48)
  const bound = 1 / Math.sqrt(48);
  assert(la.every((x) => Math.abs(x) <= bound) && la.some((x) => Math.abs(x) > bound / 2));
  assert(sa.get("layers.0.mlp.w2.lora_b.weight")!.data.every((x) => x === 0));
});

Deno.test("a fresh LoRA model gives exactly the base model's logits and loss", () => {
  const fx = loadFixture("model_tiny_a");
  const be = new CpuBackend();
  const cfg = fixtureConfig(fx);
  const base = createLlama(be, { name: "tiny", config: cfg, lora: null }, { batch: 2, seqLen: 7 });
  const lora = createLlama(be, { name: "tiny", config: cfg, lora: { ...LORA, dropout: 0.3 } }, {
    batch: 2,
    seqLen: 7,
  });
  const sd = prefixedStateDict(fx, "w.");
  base.loadStateDict(sd);
  lora.loadStateDict(sd); // no adapter tensors: fresh adapters
  const tokens = fx.i32("tokens");
  const targets = fx.i32("targets");
  deepStrictEqual(be.download(lora.forward(tokens)), be.download(base.forward(tokens)));
  const r = lora.lossAndBackward(tokens, targets, 1);
  const rb = base.loss(tokens, targets);
  assert(r.lossSum === rb.lossSum, `${r.lossSum} vs ${rb.lossSum}`);
  // only the adapters are trainable; with B = 0 only B gets gradient
  assert(lora.base.grads === null && lora.trainable === lora.adapters);
  const g = lora.adapters!;
  for (const e of g.layout.entries) {
    const grad = g.getGrad(e.name);
    const nonzero = grad.some((x) => x !== 0);
    assert(e.name.endsWith("lora_b.weight") ? nonzero : !nonzero, e.name);
  }
  deepStrictEqual(lora.mergedStateDict().get("output.weight")!.data, sd.get("output.weight")!.data);
});

Deno.test("baseLayout() and loraLayout() keep every layer contiguous", () => {
  const cfg = fixtureConfig(loadFixture("model_tiny_b"));
  const layout = baseLayout(cfg);
  deepStrictEqual(layout.groups.map((g) => g.name), [
    "tok_embeddings",
    "layers.0",
    "layers.1",
    "head",
  ]);
  let end = 0;
  for (const g of layout.groups) {
    assert(g.offset === end, `${g.name} starts at ${g.offset}, previous ends at ${end}`);
    for (const e of g.entries) {
      assert(e.offset >= g.offset && e.offset + e.length <= g.offset + g.length, e.name);
      assert(e.name === g.name || e.name.startsWith(g.name === "head" ? "" : g.name), e.name);
    }
    end = g.offset + g.length;
  }
  assert(layout.has("layers.1.attn.k_proj.bias") && !layout.has("output.weight"));
  const ll = loraLayout({ ...cfg, tiedEmbeddings: false }, LORA);
  deepStrictEqual(ll.groups.map((g) => g.name), ["layers.0", "layers.1", "head"]);
  deepStrictEqual(ll.get("layers.1.mlp.w2.lora_a.weight").shape, [4, 48]);
  deepStrictEqual(ll.get("output.lora_b.weight").shape, [61, 4]);
  expectTuneError(() => loraLayout(cfg, LORA), /apply_lora_to_output.*tied/);
});
