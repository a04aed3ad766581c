/**
 * The generation rows of `deno task bench` that run as a user would: `tune run generate`
 * (greedy, empty prompt = BOS alone, as llama2.c's run.c) on llama2.c-format files, with
 * tokens/s read from the recipe's closing speed line. The 15M shape (stories15M layout,
 * seeded random weights, Llama 2's tokenizer) is written to a temporary directory by the
 * bench itself; aidreams260K is the real model in tests/data.
 * Also batched generation in-process: B prompts decoded side by side through `generateTokens`.
 */
import { join } from "node:path";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { writeLlama2c } from "../src/checkpoint/llama2c.ts";
import { generateTokens } from "../src/generation/generate.ts";
import { createLlama } from "../src/models/llama/model.ts";
import { randomBaseWeights } from "../src/models/llama/init.ts";
import { baseLayout } from "../src/models/llama/layout.ts";
import { SeededRandom } from "../src/params/random.ts";
import { type BenchShape, GEN_TOKENS } from "./shapes.ts";
import { tuneTaskV8Flags } from "../scripts/tune_task.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** A llama2.c model directory (model.bin + tokenizer.bin) and the new tokens it allows. */
export interface Llama2cFiles {
  name: string;
  dir: string;
  maxNewTokens: number;
  cleanup(): void;
}

/** The 15M shape as a llama2.c file with random weights (seed 0), in a temporary directory. */
export function write15MFiles(shape: BenchShape): Llama2cFiles {
  const dir = Deno.makeTempDirSync({ prefix: "tune_bench_15m_" });
  const cfg = { ...shape.config, maxSeqLen: GEN_TOKENS };
  writeLlama2c(join(dir, "model.bin"), cfg, randomBaseWeights(cfg, baseLayout(cfg), 0));
  Deno.copyFileSync(
    join(ROOT, "tests/data/tokenizers/llama2/tokenizer.bin"),
    join(dir, "tokenizer.bin"),
  );
  return {
    name: "15M (llama2.c file)",
    dir,
    maxNewTokens: GEN_TOKENS - 1,
    cleanup: () => Deno.removeSync(dir, { recursive: true }),
  };
}

/** aidreams260K from tests/data (max_seq_len 128). */
export function aidreamsFiles(): Llama2cFiles {
  return {
    name: "aidreams260K (llama2.c file)",
    dir: join(ROOT, "tests/data/models/aidreams260K"),
    maxNewTokens: 127,
    cleanup: () => {},
  };
}

/** tokens/s of one `tune run generate` (the closing speed line of its stderr). */
export async function tuneGenerate(files: Llama2cFiles): Promise<number> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      ...tuneTaskV8Flags(new URL("..", import.meta.url)), // as `deno task tune` runs it
      join(ROOT, "cli.ts"),
      "run",
      "generate",
      "--config",
      "llama2c/generate",
      `checkpointer.checkpoint_dir=${files.dir}`,
      `max_new_tokens=${files.maxNewTokens}`,
      "temperature=0",
      "prompt=",
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(out.stderr);
  const m = err.match(/([\d.]+) tokens\/s/);
  if (!out.success || !m) throw new Error(`tune run generate failed on ${files.name}: ${err}`);
  return Number(m[1]);
}

/**
 * Greedy generation of GEN_TOKENS tokens for `batch` sequences at once (different one-token
 * prompts, one stop-free run each) through generateTokens; per `once()` the total new
 * tokens over all sequences per second.
 */
export function batchedGenerateRunner(shape: BenchShape, batch: number) {
  const be = new CpuBackend();
  const model = createLlama(be, { name: shape.name, config: shape.config, lora: null }, {
    batch: 1,
    seqLen: 1,
    seed: 0,
    training: false,
  });
  model.initRandom(0);
  const prompts = Array.from({ length: batch }, (_, b) => [1 + b]);
  const run = () =>
    generateTokens(model, be, prompts, {
      temperature: 0,
      topK: null,
      topP: null,
      maxNewTokens: GEN_TOKENS,
      stopIds: [],
      rng: new SeededRandom(0),
    });
  run(); // warm-up
  return {
    once(): number {
      const t0 = performance.now();
      run();
      return (performance.now() - t0) / 1000;
    },
    tokens: batch * GEN_TOKENS,
    free: () => model.free(),
  };
}
