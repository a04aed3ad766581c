/**
 * Where a token's time goes in greedy batch-1 generation (issue #17): the loop of
 * `generateTokens` as `tune run generate` drives it, split into its parts per token: the
 * decode step (the model), reading the logits, the sampling, the stream decode and the write
 * to stdout (here to /dev/null). Each run is a fresh model, as the recipe's one run is, so
 * the first tokens pay the JIT warm-up as a user's run does; the table gives the mean per
 * token over all runs and over the last run (warm), and the loop's CPU time (user + system,
 * all threads) per token, which a loaded host disturbs less than the wall time.
 *
 *   deno run -A bench/profile_generate.ts [model dir] [new tokens] [runs]
 */
import { join } from "node:path";
import { cpuUsage } from "node:process";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { readLlama2c } from "../src/checkpoint/llama2c.ts";
import { sampleToken } from "../src/generation/sampling.ts";
import { TextStream } from "../src/generation/stream.ts";
import { createLlama } from "../src/models/llama/model.ts";
import { SeededRandom } from "../src/params/random.ts";
import { loadTokenizer } from "../src/tokenizers/load.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const dir = Deno.args[0] ?? join(ROOT, "tests/data/models/aidreams260K");
const N = Number(Deno.args[1] ?? 127);
const runs = Number(Deno.args[2] ?? 5);
const file = readLlama2c(join(dir, "model.bin"));
const tok = loadTokenizer(join(dir, "tokenizer.bin"));
const sink = Deno.openSync("/dev/null", { write: true });
const enc = new TextEncoder();
const parts = ["setup", "prefill", "step", "sample", "stream", "write"] as const;
type Part = typeof parts[number];
const total = (): Record<Part, number> => Object.fromEntries(parts.map((p) => [p, 0])) as never;
const all = total();
let last = total();
let lastLoop = 0, allLoop = 0, cpu = 0;
for (let r = 0; r < runs; r++) {
  const be = new CpuBackend();
  const model = createLlama(be, { name: "m", config: file.config, lora: null }, {
    batch: 1,
    seqLen: 1,
    training: false,
  });
  model.loadStateDict(file.stateDict);
  const t = total();
  const opts = { temperature: 0, topK: null, topP: null };
  const rng = new SeededRandom(0);
  let a = performance.now();
  const lap = (p: Part) => {
    const b = performance.now();
    t[p] += b - a;
    a = b;
  };
  model.setupCaches(1, N + 1);
  lap("setup");
  const ids = [tok.bosId!];
  const stream = new TextStream(tok, ids);
  const c0 = cpuUsage();
  const t0 = performance.now();
  a = t0;
  let logits = be.download(model.prefill(Int32Array.from(ids))) as Float32Array;
  lap("prefill");
  const next = new Int32Array(1);
  for (let i = 0; i < N; i++) {
    const id = sampleToken(logits, opts, rng);
    lap("sample");
    const text = stream.push(id);
    lap("stream");
    if (text) sink.writeSync(enc.encode(text));
    lap("write");
    if (i === N - 1) break;
    next[0] = id;
    logits = be.download(model.decodeStep(next)) as Float32Array;
    lap("step");
  }
  const loop = performance.now() - t0;
  const c1 = cpuUsage(c0);
  cpu += (c1.user + c1.system) / 1000;
  for (const p of parts) all[p] += t[p];
  allLoop += loop;
  last = t;
  lastLoop = loop;
  model.free();
}
const us = (ms: number, n: number) => (ms * 1000 / n).toFixed(1).padStart(9);
console.log(`${dir}: ${N} tokens x ${runs} runs, load ${Deno.loadavg()[0].toFixed(2)}`);
console.log(`part       all runs us/token   last run us/token`);
for (const p of parts) {
  console.log(`${p.padEnd(10)} ${us(all[p], N * runs)}          ${us(last[p], N)}`);
}
console.log(
  `loop       ${us(allLoop, N * runs)}          ${us(lastLoop, N)}   ` +
    `(${(N * runs / allLoop * 1000).toFixed(0)} / ${(N / lastLoop * 1000).toFixed(0)} tokens/s)`,
);
console.log(`loop CPU   ${us(cpu, N * runs)}   (all runs)`);
