/**
 * The tune side of `deno task bench`: train-step and generation throughput of the CPU
 * backend on one shape, measured as the best of `reps` timed runs after one warm-up.
 */
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { argmax } from "../src/generation/sampling.ts";
import { createLlama } from "../src/models/llama/model.ts";
import { AdamW } from "../src/optim/adamw.ts";
import { BENCH_LORA, type BenchShape, GEN_TOKENS } from "./shapes.ts";

/** Mode of a throughput row. */
export type BenchMode = "full" | "lora" | "generate";

/** One measured row. */
export interface BenchResult {
  /** Best wall time of one step (training) or of the whole generation, in seconds. */
  seconds: number;
  tokensPerS: number;
}

/** Deterministic random ids (B*T + 1 of them), so tokens and shifted targets are fixed. */
function randomIds(n: number, vocab: number): Int32Array {
  const out = new Int32Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    out[i] = (s >>> 8) % vocab;
  }
  return out;
}

/** A prepared (warmed-up) measurement: `once()` times one repetition in seconds. */
export interface Runner {
  once(): number;
  /** Tokens processed by one repetition. */
  tokens: number;
  free(): void;
}

/**
 * One training step per `once()` (zero grads, forward, loss, backward, AdamW) for full
 * fine-tuning or LoRA; one untimed warm-up step runs here (JIT, first touch of buffers).
 */
export function trainRunner(shape: BenchShape, lora: boolean): Runner {
  const be = new CpuBackend();
  const spec = { name: shape.name, config: shape.config, lora: lora ? BENCH_LORA : null };
  const model = createLlama(be, spec, { batch: shape.batch, seqLen: shape.seqLen, seed: 0 });
  model.initRandom(0);
  const N = shape.batch * shape.seqLen;
  const ids = randomIds(N + 1, shape.config.vocabSize);
  const tokens = ids.subarray(0, N);
  const targets = ids.slice(1, N + 1);
  const opt = new AdamW(be, model.trainable, {
    lr: 1e-4,
    betas: [0.9, 0.999],
    eps: 1e-8,
    weightDecay: 0.01,
  });
  const step = () => {
    model.zeroGrad();
    const r = model.lossAndBackward(tokens, targets, 1 / N);
    opt.step();
    return r.lossSum;
  };
  step();
  return {
    once() {
      const t0 = performance.now();
      step();
      return (performance.now() - t0) / 1000;
    },
    tokens: N,
    free: () => model.free(),
  };
}

/** Greedy generation of GEN_TOKENS tokens from BOS with the KV cache (batch 1) per `once()`. */
export function generateRunner(shape: BenchShape): Runner {
  const be = new CpuBackend();
  const spec = { name: shape.name, config: shape.config, lora: null };
  const model = createLlama(be, spec, { batch: 1, seqLen: 1, seed: 0 });
  model.initRandom(0);
  model.setupCaches(1, GEN_TOKENS + 1);
  const tok = new Int32Array(1);
  const once = () => {
    const t0 = performance.now();
    tok[0] = 1;
    let logits = model.prefill(tok);
    for (let n = 1; n < GEN_TOKENS; n++) {
      tok[0] = argmax(be.download(logits) as Float32Array);
      logits = model.decodeStep(tok);
    }
    tok[0] = argmax(be.download(logits) as Float32Array);
    return (performance.now() - t0) / 1000;
  };
  once(); // warm-up
  return { once, tokens: GEN_TOKENS, free: () => model.free() };
}

/** Best of `reps` repetitions of a fresh runner, as tokens/s and seconds. */
export function benchTrain(shape: BenchShape, lora: boolean, reps: number): BenchResult {
  const r = trainRunner(shape, lora);
  let best = Infinity;
  for (let i = 0; i < reps; i++) best = Math.min(best, r.once());
  r.free();
  return { seconds: best, tokensPerS: r.tokens / best };
}

/** Peak resident set (VmHWM) of this process in bytes, from /proc/self/status. */
export function peakRssBytes(): number {
  const status = Deno.readTextFileSync("/proc/self/status");
  const m = status.match(/^VmHWM:\s+(\d+)\s+kB/m);
  return m ? Number(m[1]) * 1024 : 0;
}
