/**
 * llama2.c model files: the real aidreams260K checkpoint (tests/data/models/aidreams260K)
 * loads, reproduces the reference mean cross-entropy (1e-4 abs) and the 80-token greedy
 * continuation from BOS exactly, with the KV cache and with full re-forward; and files
 * written by encodeLlama2c (legacy and version 1, tied and untied) read back bitwise.
 */
import { deepStrictEqual, ok as assert } from "node:assert";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { encodeLlama2c, parseLlama2c, readLlama2c } from "../src/checkpoint/llama2c.ts";
import { createLlama } from "../src/models/llama/model.ts";
import { loadTokenizer } from "../src/tokenizers/load.ts";
import { TuneError } from "../src/errors.ts";
import { assertClose, loadFixture } from "./fixture_io.ts";
import type { LlamaConfig } from "../src/models/llama/config.ts";
import { randomBaseWeights } from "../src/models/llama/init.ts";
import { baseLayout } from "../src/models/llama/layout.ts";

const DIR = new URL("./data/models/aidreams260K/", import.meta.url);
const MODEL = new URL("model.bin", DIR).pathname;

interface Ref {
  case: string;
  ids: number[];
  max_new_tokens: number;
  text: string;
  tokens: number[][];
  mean_cross_entropy: number;
  logits_first_row_first5: number[];
}

function refs(): Ref[] {
  return Deno.readTextFileSync(new URL("reference.jsonl", DIR)).trim().split("\n").map((l) =>
    JSON.parse(l)
  );
}

function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

Deno.test("readLlama2c() loads aidreams260K and matches the reference mean cross-entropy", () => {
  const m = readLlama2c(MODEL);
  assert(m.version === 0);
  const c = m.config;
  assert(c.dim === 64 && c.nLayers === 4 && c.nHeads === 4 && c.vocabSize === 512);
  assert(c.tiedEmbeddings && c.ropeLayout === "interleaved");
  const ref = refs().find((r) => r.case === "loss")!;
  const B = ref.tokens.length;
  const T = ref.tokens[0].length - 1;
  const be = new CpuBackend();
  const model = createLlama(be, { name: "aidreams260K", config: c, lora: null }, {
    batch: B,
    seqLen: T,
  });
  model.loadStateDict(m.stateDict);
  const inputs = Int32Array.from(ref.tokens.flatMap((r) => r.slice(0, -1)));
  const labels = Int32Array.from(ref.tokens.flatMap((r) => r.slice(1)));
  const r = model.loss(inputs, labels);
  const mean = r.lossSum / r.tokens;
  const diff = Math.abs(mean - ref.mean_cross_entropy);
  console.log(
    `aidreams260K mean CE ${mean} vs reference ${ref.mean_cross_entropy} (|diff| ${
      diff.toExponential(2)
    })`,
  );
  assert(diff <= 1e-4, `mean cross-entropy ${mean} vs ${ref.mean_cross_entropy}`);
  const logits = be.download(model.forward(inputs)) as Float32Array;
  for (let i = 0; i < 5; i++) {
    const d = Math.abs(logits[i] - ref.logits_first_row_first5[i]);
    assert(d <= 1e-4, `logit ${i}: ${logits[i]} vs ${ref.logits_first_row_first5[i]}`);
  }
  model.free();
});

Deno.test("LlamaModel greedy decoding reproduces aidreams260K's 80 reference tokens (KV cache and re-forward)", () => {
  const m = readLlama2c(MODEL);
  const ref = refs().find((r) => r.case === "greedy")!;
  const n = ref.max_new_tokens;
  const be = new CpuBackend();
  const spec = { name: "aidreams260K", config: m.config, lora: null };

  // with the KV cache: prefill the prompt, then one decode step per token
  const cached = createLlama(be, spec, { batch: 1, seqLen: 1 });
  cached.loadStateDict(m.stateDict);
  cached.setupCaches(1, ref.ids.length);
  const ids = [1];
  let logits = be.download(cached.prefill(Int32Array.of(1))) as Float32Array;
  for (let i = 0; i < n; i++) {
    const next = argmax(logits);
    ids.push(next);
    if (i < n - 1) logits = be.download(cached.decodeStep(Int32Array.of(next))) as Float32Array;
  }
  deepStrictEqual(ids, ref.ids);

  // full re-forward: the whole prefix each step through the training forward (T = 81,
  // causal, so the padded tail does not change position t's logits)
  const T = ref.ids.length;
  const full = createLlama(be, spec, { batch: 1, seqLen: T });
  full.loadStateDict(m.stateDict);
  const seq = new Int32Array(T);
  seq[0] = 1;
  const V = m.config.vocabSize;
  for (let t = 0; t < n; t++) {
    const all = be.download(full.forward(seq)) as Float32Array;
    seq[t + 1] = argmax(all.subarray(t * V, (t + 1) * V));
  }
  deepStrictEqual([...seq], ref.ids);

  // the text, through the llama2.c tokenizer beside the model
  const tok = loadTokenizer(new URL("tokenizer.bin", DIR).pathname);
  console.log(`greedy: ${JSON.stringify(tok.decode(ids))}`);
  deepStrictEqual(tok.decode(ids), ref.text);
  cached.free();
  full.free();
});

function tinyConfig(tied: boolean, layout: "interleaved" | "half"): LlamaConfig {
  return {
    vocabSize: 24,
    dim: 16,
    nLayers: 2,
    nHeads: 4,
    nKvHeads: 2,
    hiddenDim: 20,
    normEps: 1e-5,
    ropeTheta: 10000,
    ropeScaling: null,
    ropeLayout: layout,
    maxSeqLen: 12,
    tiedEmbeddings: tied,
    qkvBias: false,
  };
}

for (const version of [0, 1] as const) {
  for (const tied of [true, false]) {
    Deno.test(`encodeLlama2c() version ${version} ${tied ? "tied" : "untied"} reads back bitwise`, () => {
      const cfg = tinyConfig(tied, "interleaved");
      const sd = randomBaseWeights(cfg, baseLayout(cfg), 7);
      const bytes = encodeLlama2c(cfg, sd, { version });
      const back = parseLlama2c(bytes);
      assert(back.version === version);
      deepStrictEqual(back.config, cfg);
      deepStrictEqual([...back.stateDict.keys()].sort(), [...sd.keys()].sort());
      for (const [n, t] of sd) {
        deepStrictEqual(back.stateDict.get(n)!.shape, t.shape, n);
        deepStrictEqual(back.stateDict.get(n)!.data, t.data, n);
      }
    });
  }
}

Deno.test("encodeLlama2c() permutes a rotate-half model so logits are unchanged", () => {
  const cfg = tinyConfig(false, "half");
  const sd = randomBaseWeights(cfg, baseLayout(cfg), 11);
  const back = parseLlama2c(encodeLlama2c(cfg, sd));
  const be = new CpuBackend();
  const tokens = Int32Array.from({ length: 10 }, (_, i) => (i * 5 + 2) % 24);
  const a = createLlama(be, { name: "half", config: cfg, lora: null }, { batch: 1, seqLen: 10 });
  a.loadStateDict(sd);
  const b = createLlama(be, { name: "inter", config: back.config, lora: null }, {
    batch: 1,
    seqLen: 10,
  });
  b.loadStateDict(back.stateDict);
  const la = be.download(a.forward(tokens)) as Float32Array;
  const lb = be.download(b.forward(tokens)) as Float32Array;
  let worst = 0;
  for (let i = 0; i < la.length; i++) worst = Math.max(worst, Math.abs(la[i] - lb[i]));
  assert(worst <= 1e-5, `logits differ by ${worst}`);
});

Deno.test("parseLlama2c() refuses unknown versions, truncated files and trailing bytes", () => {
  const cfg = tinyConfig(true, "interleaved");
  const bytes = encodeLlama2c(cfg, randomBaseWeights(cfg, baseLayout(cfg), 3), { version: 1 });
  const v3 = bytes.slice();
  new DataView(v3.buffer).setInt32(4, 3, true);
  const expectTune = (f: () => unknown, re: RegExp) => {
    try {
      f();
    } catch (e) {
      assert(e instanceof TuneError, `not a TuneError: ${e}`);
      assert(re.test(e.message), e.message);
      return;
    }
    throw new Error("no error");
  };
  expectTune(() => parseLlama2c(v3, "m.bin"), /version 3/);
  expectTune(() => parseLlama2c(bytes.subarray(0, bytes.length - 8), "m.bin"), /truncated/);
  const longer = new Uint8Array(bytes.length + 4);
  longer.set(bytes);
  expectTune(() => parseLlama2c(longer, "m.bin"), /after the last tensor/);
  expectTune(
    () => encodeLlama2c({ ...cfg, qkvBias: true }, new Map()),
    /q\/k\/v biases/,
  );
});

Deno.test("parseLlama2c() dequantizes a version 2 (Q8_0) file (weights atol 1e-6)", () => {
  const bytes = Deno.readFileSync(new URL("./fixtures/model_llama2c_v2.bin", import.meta.url));
  const m = parseLlama2c(bytes, "model_llama2c_v2.bin");
  assert(m.version === 2 && !m.config.tiedEmbeddings && m.config.nKvHeads === 1);
  const fx = loadFixture("model_llama2c_v2");
  deepStrictEqual([...m.stateDict.keys()].sort(), fx.names().sort());
  for (const n of fx.names()) {
    assertClose(n, m.stateDict.get(n)!.data, fx.f32(n), { atol: 1e-6, rtol: 0 });
  }
  // and the model builds from it
  const be = new CpuBackend();
  createLlama(be, { name: "v2", config: m.config, lora: null }, { batch: 1, seqLen: 4 })
    .loadStateDict(m.stateDict);
});
