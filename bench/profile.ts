/**
 * `deno run -A bench/profile.ts [--shape 15M|260K] [--mode full|lora|generate] [--steps N]`
 *
 * Where a step's time goes: wraps every method of a CpuBackend with a timer and prints the
 * time per op (summed over `steps` steps after one warm-up), largest first.
 */
import { parseArgs } from "node:util";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import type { FusedDecoder } from "../src/backend/ops.ts";
import { argmax } from "../src/generation/sampling.ts";
import { createLlama } from "../src/models/llama/model.ts";
import { AdamW } from "../src/optim/adamw.ts";
import { BENCH_LORA, GEN_TOKENS, SHAPES } from "./shapes.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    shape: { type: "string", default: "15M" },
    mode: { type: "string", default: "full" },
    steps: { type: "string", default: "2" },
  },
});
if (!Deno.env.get("OPENBLAS_NUM_THREADS")) Deno.env.set("OPENBLAS_NUM_THREADS", "2");
const shape = SHAPES.find((s) => s.name === values.shape)!;
const be = new CpuBackend();
const times = new Map<string, number>();
const calls = new Map<string, number>();
let timing = false;
const proto = Object.getPrototypeOf(be);
for (const name of Object.getOwnPropertyNames(proto)) {
  const f = proto[name];
  if (name === "constructor" || typeof f !== "function") continue;
  // deno-lint-ignore no-explicit-any
  (be as any)[name] = (...args: unknown[]) => {
    if (name === "createDecoder") {
      // the fused decode step is one call per token: time it as "decoder.step"
      const dec = f.apply(be, args) as FusedDecoder;
      const step = dec.step.bind(dec);
      dec.step = (tokens, pos) => {
        if (!timing) return step(tokens, pos);
        const t0 = performance.now();
        step(tokens, pos);
        times.set("decoder.step", (times.get("decoder.step") ?? 0) + performance.now() - t0);
        calls.set("decoder.step", (calls.get("decoder.step") ?? 0) + 1);
      };
      return dec;
    }
    if (!timing) return f.apply(be, args);
    const t0 = performance.now();
    const r = f.apply(be, args);
    times.set(name, (times.get(name) ?? 0) + performance.now() - t0);
    calls.set(name, (calls.get(name) ?? 0) + 1);
    return r;
  };
}
const gen = values.mode === "generate";
const lora = values.mode === "lora";
const model = createLlama(be, {
  name: shape.name,
  config: shape.config,
  lora: lora ? BENCH_LORA : null,
}, {
  batch: gen ? 1 : shape.batch,
  seqLen: gen ? 1 : shape.seqLen,
});
model.initRandom(0);
const N = shape.batch * shape.seqLen;
const ids = new Int32Array(N + 1).map((_, i) => (i * 7919) % shape.config.vocabSize);
const opt = new AdamW(be, model.trainable, {
  lr: 1e-4,
  betas: [0.9, 0.999],
  eps: 1e-8,
  weightDecay: 0.01,
});
const run = () => {
  if (gen) {
    model.setupCaches(1, GEN_TOKENS + 1);
    let logits = model.prefill(Int32Array.of(1));
    for (let n = 1; n < GEN_TOKENS; n++) {
      logits = model.decodeStep(Int32Array.of(argmax(be.download(logits) as Float32Array)));
    }
    return;
  }
  model.zeroGrad();
  model.lossAndBackward(ids.subarray(0, N), ids.slice(1), 1 / N);
  opt.step();
};
run();
const steps = Number(values.steps);
timing = true;
/** Per op: the smallest per-step time seen (the host is shared; the minimum filters noise). */
const best = new Map<string, number>();
let total = Infinity;
for (let i = 0; i < steps; i++) {
  times.clear();
  calls.clear();
  const t0 = performance.now();
  run();
  total = Math.min(total, performance.now() - t0);
  for (const [name, t] of times) best.set(name, Math.min(best.get(name) ?? Infinity, t));
}
let opsTotal = 0;
const rows = [...best].sort((a, b) => b[1] - a[1]);
console.log(`min over ${steps} steps of each op's time per step (ms):`);
for (const [name, t] of rows) {
  opsTotal += t;
  console.log(
    `${name.padEnd(20)} ${t.toFixed(1).padStart(9)} ${String(calls.get(name)!).padStart(6)} calls`,
  );
}
console.log(`${"sum of op minima".padEnd(20)} ${opsTotal.toFixed(1).padStart(9)}`);
console.log(`${"fastest step".padEnd(20)} ${total.toFixed(1).padStart(9)}`);
