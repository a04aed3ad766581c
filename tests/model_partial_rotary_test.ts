/**
 * Partial rotary embeddings (Hugging Face `partial_rotary_factor`, Phi-4-mini): rope on the
 * first floor(HS * factor) dims of each head, the rest passed through. The fixture is
 * tests/reference/phi3_partial_rotary_reference.py: a tiny Phi3ForCausalLM with factor 0.75
 * (6 of 8 head dims rotate) and transformers' Phi-3 forward in fp32 torch.
 * Tolerances (../shared/STYLE.md): logits atol 1e-5 rtol 1e-4; loss and every gradient atol
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
import type { LlamaConfig } from "../src/models/llama/config.ts";
import { createLlama } from "../src/models/llama/model.ts";
import type { StateDict } from "../src/params/state_dict.ts";
import { assertClose, loadFixture, worstError } from "./fixture_io.ts";

const DIR = new URL("./fixtures/checkpoint_hf_phi3_partial", import.meta.url).pathname;
const FX = loadFixture("phi3_partial_rotary");

function logits(sd: StateDict, config: LlamaConfig, tokens: Int32Array): Float32Array {
  const be = new CpuBackend();
  const model = createLlama(be, { name: "p", config, lora: null }, {
    batch: 1,
    seqLen: tokens.length,
    training: false,
  });
  model.loadStateDict(sd);
  const out = (be.download(model.forward(tokens)) as Float32Array).slice(); // (1, T, V)
  model.free();
  return out;
}

Deno.test("a Phi-3 checkpoint with partial_rotary_factor 0.75 gives transformers' logits", () => {
  const hf = loadHfCheckpoint(DIR);
  assertEquals(hf.config.partialRotaryFactor, 0.75);
  const ref = FX.f32("logits");
  const got = logits(hf.stateDict, hf.config, FX.i32("tokens"));
  const w = worstError(got, ref, 1e-5, 1e-4);
  console.log(`partial rotary logits vs PyTorch: max |diff| ${w.maxAbs.toExponential(2)}`);
  assertClose("logits", got, ref, { atol: 1e-5, rtol: 1e-4 });
  // control: the same weights with rope on every dim are visibly different
  const full = { ...hf.config };
  delete full.partialRotaryFactor;
  const off = worstError(logits(hf.stateDict, full, FX.i32("tokens")), ref, 1e-5, 1e-4);
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
  const be = new CpuBackend();
  const prompt = new Int32Array([3, 17, 29]);
  const steps = 6;
  const model = createLlama(be, { name: "p", config: hf.config, lora: null }, {
    batch: 1,
    seqLen: prompt.length + steps,
    training: false,
  });
  model.loadStateDict(hf.stateDict);
  model.setupCaches(1, prompt.length + steps);
  const V = hf.config.vocabSize;
  const argmax = (a: Float32Array, o: number) => {
    let best = 0;
    for (let v = 1; v < V; v++) if (a[o + v] > a[o + best]) best = v;
    return best;
  };
  const seq = [...prompt];
  const cached: Float32Array[] = [];
  let last = (be.download(model.prefill(prompt)) as Float32Array).slice();
  for (let s = 0; s < steps; s++) {
    cached.push(last);
    seq.push(argmax(last, 0));
    if (s < steps - 1) {
      last = (be.download(model.decodeStep(new Int32Array([seq.at(-1)!]))) as Float32Array)
        .slice();
    }
  }
  model.free();
  const full = logits(hf.stateDict, hf.config, new Int32Array(seq));
  for (let s = 0; s < steps; s++) {
    const t = prompt.length - 1 + s;
    assertClose(`cached logits at ${t}`, cached[s], full.subarray(t * V, (t + 1) * V), {
      atol: 1e-5,
      rtol: 1e-4,
    });
  }
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
