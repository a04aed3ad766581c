/**
 * Partial rotary embeddings (Hugging Face `partial_rotary_factor`, Phi-4-mini): rope on the
 * first floor(HS * factor) dims of each head, the rest passed through. The fixture is
 * tests/reference/phi3_partial_rotary_reference.py: a tiny Phi3ForCausalLM with factor 0.75
 * (6 of 8 head dims rotate) and transformers' Phi-3 forward in fp32 torch.
 * Tolerances (the project's STYLE.md table): logits atol 1e-5 rtol 1e-4; loss and every gradient atol
 * 1e-4 rtol 1e-3; save -> load bitwise; KV-cache logits vs the full forward atol 1e-5 rtol 1e-4.
 * The CUDA kernel (kernels/layers.cu rope_partial) is checked against this CPU op in
 * tests/gpu/rope_test.ts (on a GPU, and on the kernel emulator by tests/cuda_emulator_test.ts).
 */
import { deepStrictEqual as assertEquals, ok as assert, throws } from "node:assert";
import { join } from "node:path";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { loadHfCheckpoint, saveHfCheckpoint } from "../src/checkpoint/hf_checkpoint.ts";
import { convertRopeLayout } from "../src/checkpoint/rope_permute.ts";
import { TuneError } from "../src/errors.ts";
import { createLlama } from "../src/models/llama/model.ts";
import type { StateDict } from "../src/params/state_dict.ts";
import { assertClose, loadFixture, worstError } from "./fixture_io.ts";
import { checkCachedGreedy, fullLogits } from "./_decode_helpers.ts";

const DIR = new URL("./fixtures/checkpoint_hf_phi3_partial", import.meta.url).pathname;
const FX = loadFixture("phi3_partial_rotary");

Deno.test("a Phi-3 checkpoint with partial_rotary_factor 0.75 gives transformers' logits", () => {
  const hf = loadHfCheckpoint(DIR);
  assertEquals(hf.config.partialRotaryFactor, 0.75);
  const ref = FX.f32("logits");
  const got = fullLogits(hf.stateDict, hf.config, FX.i32("tokens"));
  const w = worstError(got, ref, 1e-5, 1e-4);
  console.log(`partial rotary logits vs PyTorch: max |diff| ${w.maxAbs.toExponential(2)}`);
  assertClose("logits", got, ref, { atol: 1e-5, rtol: 1e-4 });
  // control: the same weights with rope on every dim are visibly different
  const full = { ...hf.config };
  delete full.partialRotaryFactor;
  const off = worstError(fullLogits(hf.stateDict, full, FX.i32("tokens")), ref, 1e-5, 1e-4);
  console.log(`with full rotary instead: max |diff| ${off.maxAbs.toExponential(2)}`);
  assert(off.maxAbs > 1e-3);
});

Deno.test("`lossAndBackward()` with partial rotary gives PyTorch's loss and every gradient", () => {
  const hf = loadHfCheckpoint(DIR);
  const tokens = FX.i32("train_tokens"), targets = FX.i32("train_targets");
  const be = new CpuBackend();
  const model = createLlama(be, { name: "p", config: hf.config, lora: null }, {
    batch: 2,
    seqLen: 6,
  });
  model.loadStateDict(hf.stateDict);
  model.zeroGrad();
  const count = targets.filter((t) => t !== -100).length;
  const r = model.lossAndBackward(tokens, targets, 1 / count);
  const loss = r.lossSum / r.tokens;
  console.log(`partial rotary loss ${loss} vs PyTorch ${FX.f32("loss")[0]}`);
  assertClose("loss", new Float32Array([loss]), FX.f32("loss"), { atol: 1e-4, rtol: 1e-3 });
  const grads: StateDict = new Map();
  for (const name of model.trainableNames()) {
    const data = (be.download(model.base.grad(name)!) as Float32Array).slice();
    grads.set(name, { shape: [...model.base.layout.get(name)!.shape], data });
  }
  const half = convertRopeLayout(grads, hf.config, "half"); // the fixture's rotate-half rows
  let worst = 0;
  for (const [name, t] of half) {
    const ref = FX.f32(`grad.${name}`);
    worst = Math.max(worst, worstError(t.data, ref, 1e-4, 1e-3).maxAbs);
    assertClose(`grad ${name}`, t.data, ref, { atol: 1e-4, rtol: 1e-3 });
  }
  console.log(`${half.size} gradients vs PyTorch: max |diff| ${worst.toExponential(2)}`);
  assertEquals(half.size, 3 + 9 * 2);
  model.free();
});

Deno.test("greedy decoding with partial rotary and the KV cache equals the full forward", () => {
  const hf = loadHfCheckpoint(DIR);
  const prompt = new Int32Array([3, 17, 29]);
  const steps = 6;
  checkCachedGreedy(hf, prompt, steps, { argmax: false });
});

Deno.test("a partial-rotary Phi-3 saves partial_rotary_factor and reloads bitwise", () => {
  const hf = loadHfCheckpoint(DIR);
  const tmp = Deno.makeTempDirSync();
  try {
    saveHfCheckpoint(tmp, hf.stateDict, hf.config, { modelType: "PHI3_MINI" });
    const cfg = JSON.parse(Deno.readTextFileSync(join(tmp, "config.json")));
    assertEquals(cfg.partial_rotary_factor, 0.75);
    const back = loadHfCheckpoint(tmp);
    assertEquals(back.config, hf.config);
    for (const [name, t] of hf.stateDict) {
      const b = back.stateDict.get(name)!;
      assertEquals(new Uint32Array(b.data.buffer), new Uint32Array(t.data.buffer), name);
    }
    // another architecture has no partial rotary in transformers: refused in one line
    throws(
      () => saveHfCheckpoint(tmp, hf.stateDict, hf.config, { modelType: "LLAMA3" }),
      (e: unknown) =>
        e instanceof TuneError && e.message.includes("partial rotary") &&
        !e.message.includes("\n"),
    );
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});
