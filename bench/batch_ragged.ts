/**
 * Batched generation where it is uneven: 8 prompts of 1..22 tokens, greedy, through
 * `generateTokens` at once against one at a time (same ids required), and a batch whose
 * sequences stop at different steps with and without the `live` flags that let the fused
 * decoder skip finished sequences (the second run hides them from decodeStep). Old and
 * new alternate in one process, best of N; the ratios are what this prints.
 *
 *   deno run -A bench/batch_ragged.ts [15M|260K] [new tokens] [reps]
 */
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { type GenerateOptions, generateTokens } from "../src/generation/generate.ts";
import { createLlama, type LlamaModel } from "../src/models/llama/model.ts";
import { SeededRandom } from "../src/params/random.ts";
import { SHAPES } from "./shapes.ts";

const shape = SHAPES.find((s) => s.name === (Deno.args[0] ?? "260K"))!;
const N = Number(Deno.args[1] ?? 64), reps = Number(Deno.args[2] ?? 3);
const be = new CpuBackend();
const model = createLlama(be, { name: shape.name, config: shape.config, lora: null }, {
  batch: 1,
  seqLen: 1,
  seed: 0,
  training: false,
});
model.initRandom(0);
/** The same model with decodeStep's live flags dropped (every row decoded, as before). */
const noLive = new Proxy(model, {
  get(m, k) {
    if (k === "decodeStep") return (t: Int32Array) => m.decodeStep(t);
    const v = Reflect.get(m, k, m);
    return typeof v === "function" ? v.bind(m) : v;
  },
}) as LlamaModel;
const opt = (stopIds: number[]): GenerateOptions => ({
  temperature: 0,
  topK: null,
  topP: null,
  maxNewTokens: N,
  stopIds,
  rng: new SeededRandom(0),
});
const ms = (f: () => unknown) => {
  const t = performance.now();
  f();
  return performance.now() - t;
};

// 1. prompts of 1, 4, ..., 22 tokens: batched vs one at a time
const ragged = Array.from(
  { length: 8 },
  (_, b) => Array.from({ length: 1 + 3 * b }, (_, t) => 1 + ((b * 31 + t * 7) % 300)),
);
const batch = () => generateTokens(model, be, ragged, opt([]));
const alone = () => ragged.map((p) => generateTokens(model, be, [p], opt([])).tokens[0]);
const same = JSON.stringify(batch().tokens) === JSON.stringify(alone());
let ta = Infinity, tb = Infinity;
for (let r = 0; r < reps; r++) {
  ta = Math.min(ta, ms(alone));
  tb = Math.min(tb, ms(batch));
}
const tps = (t: number, n: number) => (n / t * 1000).toFixed(0);
console.log(
  `${shape.name} ragged 8 x ${N}: one at a time ${tps(ta, 8 * N)} tok/s, batched ${
    tps(tb, 8 * N)
  } tok/s (${(ta / tb).toFixed(2)}x); same ids: ${same}`,
);

// 2. 8 one-token prompts, stop ids that end sequences at different steps
const starts = Array.from({ length: 8 }, (_, b) => [1 + 37 * b]);
const free = generateTokens(model, be, starts, opt([])).tokens;
const stops = free.map((ids, b) => ids[Math.floor(N * b / 8)]).filter((id) =>
  id !== free[7][N - 1]
);
const withLive = () => generateTokens(model, be, starts, opt(stops));
const without = () => generateTokens(noLive, be, starts, opt(stops));
const r = withLive();
const equal = JSON.stringify(r.tokens) === JSON.stringify(without().tokens);
let tl = Infinity, tn = Infinity;
for (let i = 0; i < reps; i++) {
  tn = Math.min(tn, ms(without));
  tl = Math.min(tl, ms(withLive));
}
console.log(
  `${shape.name} 8 sequences stopping after ${r.tokens.map((t) => t.length).join(",")} tokens: ` +
    `finished rows decoded ${tn.toFixed(1)} ms, skipped ${tl.toFixed(1)} ms (${
      (tn / tl).toFixed(2)
    }x); same ids: ${equal}; load ${Deno.loadavg()[0].toFixed(0)}`,
);
model.free();
