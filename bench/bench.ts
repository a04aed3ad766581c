/**
 * `deno task bench [--json] [--reps N] [--shape 15M|260K] [--mode full|lora|generate|llama2c|batch|memory|io]`
 *
 * Throughput of tune's CPU backend against PyTorch (bench/torch_bench.py, torch eager,
 * 2 threads) on the same machine, in the same invocation, row by row: train-step tokens/s
 * for full fine-tuning and LoRA (rank 8 on q and v; forward, backward and AdamW) and
 * greedy generation tokens/s with the KV cache (batch 1, 256 new tokens), each the best of
 * `reps` runs after a warm-up, tune and PyTorch repetitions alternating (PyTorch runs as a
 * persistent `torch_bench.py --mode serve` subprocess) so both see the same load on a
 * shared host; plus the peak resident memory of a 15M full fine-tuning
 * step, each side measured in its own subprocess. Then tune alone (generate_bench.ts): the
 * closing tokens/s of `tune run generate` on llama2.c files (the 15M shape written by the
 * bench, aidreams260K), best of `reps` runs, and greedy generation at batch 1 and 8 in-process.
 * Prints tables with tune/PyTorch ratios, or with `--json` one JSON object per line.
 * `--mode io` (only when asked: minutes, ~8 GB of memory and 4 GB of disk) runs bench/io_1b.ts
 * at the Llama-3.2-1B shape: random init parameters/s, save and load GB/s, and the peak RSS of a
 * LoRA run over the fp32 weights.
 * Env: TUNE_BENCH_PYTHON (default /usr/bin/python3), OPENBLAS_NUM_THREADS (default 2),
 * TUNE_BENCH_TORCH_MALLOC=default (PyTorch with glibc's malloc defaults; see torchThroughputEnv).
 */
import { parseArgs } from "node:util";
import { openBlas } from "../ffi/openblas.ts";
import {
  aidreamsFiles,
  batchedGenerateRunner,
  tuneGenerate,
  write15MFiles,
} from "./generate_bench.ts";
import { type IoResult, type LoraRunResult, runPart } from "./io_1b.ts";
import { type BenchShape, SHAPES } from "./shapes.ts";
import {
  type BenchMode,
  benchTrain,
  generateRunner,
  peakRssBytes,
  type Runner,
  trainRunner,
} from "./tune_bench.ts";

const HERE = new URL(".", import.meta.url).pathname;
// Open OpenBLAS before any PyTorch subprocess starts: it may set OPENBLAS_CORETYPE and
// OPENBLAS_THREAD_TIMEOUT (see ffi/openblas.ts), and PyTorch, linked to the same library,
// inherits them and so runs the same kernels and thread settings as tune.
openBlas();
const THREADS = 2;

interface Row {
  shape: string;
  mode: BenchMode;
  tune: number;
  pytorch: number;
}

function python(): string {
  return Deno.env.get("TUNE_BENCH_PYTHON") ?? "/usr/bin/python3";
}

function torchArgs(mode: string, shape?: string, reps = 1): string[] {
  const args = [`${HERE}torch_bench.py`, "--mode", mode, "--threads", String(THREADS)];
  if (shape) args.push("--shape", shape, "--reps", String(reps));
  return args;
}

/** One-shot torch_bench.py run (the memory row); returns its last JSON line. */
async function torchOnce(shape: string, mode: string): Promise<Record<string, number>> {
  const out = await new Deno.Command(python(), {
    args: torchArgs(mode, shape),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) {
    throw new Error(
      `torch_bench.py ${shape} ${mode} failed: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return JSON.parse(text.split("\n").pop()!);
}

/**
 * glibc malloc settings for the PyTorch throughput rows: keep freed memory in the process
 * instead of returning it to the kernel. PyTorch allocates its activations afresh every step;
 * with glibc's defaults their large blocks are mmapped and unmapped each step, so every step
 * page-faults them in again. On a VM with costly page faults (the 2-core EPYC of
 * docs/benchmarks.md: ~30 us a 4 KiB page) that made PyTorch's 260K step 6x slower and
 * mostly system time, which measured the VM, not PyTorch. tune allocates once at setup and
 * is unaffected. (The memory row keeps glibc's defaults: no trimming would raise its peak.)
 * `TUNE_BENCH_TORCH_MALLOC=default` turns this off.
 */
function torchThroughputEnv(): Record<string, string> {
  if (Deno.env.get("TUNE_BENCH_TORCH_MALLOC") === "default") return {};
  const keep = "glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295";
  const prior = Deno.env.get("GLIBC_TUNABLES");
  return { GLIBC_TUNABLES: prior ? `${prior}:${keep}` : keep };
}

/** A persistent `torch_bench.py --mode serve` subprocess (one request at a time). */
class TorchServer {
  #proc: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #lines: AsyncIterator<string>;
  constructor() {
    this.#proc = new Deno.Command(python(), {
      args: torchArgs("serve"),
      env: torchThroughputEnv(),
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.#proc.stdin.getWriter();
    this.#lines = lines(this.#proc.stdout);
  }
  async request(cmd: string): Promise<Record<string, number>> {
    await this.#writer.write(new TextEncoder().encode(cmd + "\n"));
    const r = await this.#lines.next();
    if (r.done) throw new Error(`torch_bench.py exited during "${cmd}"`);
    const o = JSON.parse(r.value);
    if (o.error) throw new Error(`torch_bench.py: ${o.error}`);
    return o;
  }
  async close(): Promise<void> {
    await this.#writer.close();
    await this.#proc.status;
  }
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buf = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, nl);
      buf = buf.slice(nl + 1);
    }
  }
}

/** Peak RSS of a tune 15M full fine-tuning step, measured in a fresh Deno subprocess. */
async function tuneMemory(shape: string): Promise<number> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${HERE}bench.ts`, "--memory-child", shape],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error("tune memory subprocess failed");
  return JSON.parse(new TextDecoder().decode(out.stdout).trim()).peak_rss_bytes;
}

/** Best tokens/s of tune and PyTorch on one row, their repetitions alternating. */
async function measureRow(
  torch: TorchServer,
  shape: BenchShape,
  mode: BenchMode,
  reps: number,
): Promise<{ tune: number; pytorch: number }> {
  const tune: Runner = mode === "generate"
    ? generateRunner(shape)
    : trainRunner(shape, mode === "lora");
  await torch.request(`prepare ${shape.name} ${mode}`);
  let bestTune = Infinity, bestTorch = Infinity, torchTokens = 0;
  for (let i = 0; i < reps; i++) {
    bestTune = Math.min(bestTune, tune.once());
    const r = await torch.request("run");
    bestTorch = Math.min(bestTorch, r.seconds);
    torchTokens = r.tokens;
  }
  tune.free();
  return { tune: tune.tokens / bestTune, pytorch: torchTokens / bestTorch };
}

function fmt(x: number): string {
  return x >= 100 ? x.toFixed(0) : x.toFixed(1);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      json: { type: "boolean", default: false },
      reps: { type: "string", default: "3" },
      shape: { type: "string" },
      mode: { type: "string" },
      "memory-child": { type: "string" },
    },
  });
  if (values["memory-child"]) {
    // one warm-up step and one step, as torch_bench.py --mode memory
    const shape = SHAPES.find((s) => s.name === values["memory-child"])!;
    benchTrain(shape, false, 1);
    console.log(JSON.stringify({ peak_rss_bytes: peakRssBytes() }));
    return;
  }
  if (values.mode === "io") {
    await ioRows(values.json);
    return;
  }
  const reps = Number(values.reps);
  const modes: BenchMode[] = ["full", "lora", "generate"];
  const rows: Row[] = [];
  const emit = (o: Record<string, unknown>) => {
    if (values.json) console.log(JSON.stringify(o));
  };
  const torchModes = modes.filter((m) => !values.mode || values.mode === m);
  const torch = torchModes.length > 0 ? new TorchServer() : null;
  for (const shape of SHAPES) {
    if (values.shape && values.shape !== shape.name) continue;
    for (const mode of torchModes) {
      if (torch === null) break;
      const { tune, pytorch } = await measureRow(torch, shape, mode, reps);
      emit({ shape: shape.name, mode, impl: "tune", tokens_per_s: tune });
      emit({ shape: shape.name, mode, impl: "pytorch", tokens_per_s: pytorch });
      rows.push({ shape: shape.name, mode, tune, pytorch });
      if (!values.json) {
        console.error(`${shape.name} ${mode}: tune ${fmt(tune)} pytorch ${fmt(pytorch)} tok/s`);
      }
    }
  }
  await torch?.close();
  let mem: { tune: number; pytorch: number } | null = null;
  if ((!values.shape || values.shape === "15M") && (!values.mode || values.mode === "memory")) {
    const tune = await tuneMemory("15M");
    emit({ shape: "15M", mode: "memory", impl: "tune", peak_rss_bytes: tune });
    const pytorch = (await torchOnce("15M", "memory")).peak_rss_bytes;
    emit({ shape: "15M", mode: "memory", impl: "pytorch", peak_rss_bytes: pytorch });
    mem = { tune, pytorch };
  }
  const gen: { shape: string; what: string; tokensPerS: number; note: string }[] = [];
  const want = (shape: string, mode: string) =>
    (!values.shape || values.shape === shape) && (!values.mode || values.mode === mode);
  for (const [shape, files] of [["15M", write15MFiles], ["260K", aidreamsFiles]] as const) {
    if (!want(shape, "llama2c")) continue;
    const f = files(SHAPES.find((s) => s.name === "15M")!);
    let best = 0;
    try {
      for (let i = 0; i < reps; i++) best = Math.max(best, await tuneGenerate(f));
    } finally {
      f.cleanup();
    }
    emit({ shape: f.name, mode: "tune run generate", impl: "tune", tokens_per_s: best });
    gen.push({
      shape: f.name,
      what: `\`tune run generate\`, greedy, ${f.maxNewTokens} new tokens from BOS`,
      tokensPerS: best,
      note: "closing speed line, best of reps",
    });
  }
  for (const shape of SHAPES) {
    if (!want(shape.name, "batch")) continue;
    const perBatch: number[] = [];
    for (const batch of [1, 8]) {
      const r = batchedGenerateRunner(shape, batch);
      let best = Infinity;
      for (let i = 0; i < reps; i++) best = Math.min(best, r.once());
      r.free();
      const tps = r.tokens / best;
      perBatch.push(tps);
      emit({ shape: shape.name, mode: `generate batch ${batch}`, impl: "tune", tokens_per_s: tps });
      gen.push({
        shape: shape.name,
        what: `greedy, batch ${batch}, 256 new tokens each`,
        tokensPerS: tps,
        note: batch === 1 ? "" : `${(tps / perBatch[0]).toFixed(2)}x batch 1`,
      });
    }
  }
  if (values.json) return;
  if (gen.length > 0) {
    console.log("| model | generation | tune tokens/s | note |");
    console.log("| --- | --- | ---: | --- |");
    for (const g of gen) {
      console.log(`| ${g.shape} | ${g.what} | ${fmt(g.tokensPerS)} | ${g.note} |`);
    }
    console.log("");
  }
  console.log("| shape | mode | tune | PyTorch | tune/PyTorch |");
  console.log("| --- | --- | ---: | ---: | ---: |");
  for (const r of rows) {
    console.log(
      `| ${r.shape} | ${r.mode} (tokens/s) | ${fmt(r.tune)} | ${fmt(r.pytorch)} | ${
        (r.tune / r.pytorch).toFixed(2)
      } |`,
    );
  }
  if (mem) {
    const mb = (b: number) => (b / 2 ** 20).toFixed(0);
    console.log(
      `| 15M | full step peak RSS (MiB, lower is better) | ${mb(mem.tune)} | ${mb(mem.pytorch)} | ${
        (mem.tune / mem.pytorch).toFixed(2)
      } |`,
    );
  }
}

/** The rows of `--mode io` (bench/io_1b.ts, each part in its own process). */
async function ioRows(json: boolean): Promise<void> {
  const io = await runPart("io") as IoResult;
  const lora = await runPart("lora") as LoraRunResult;
  if (json) {
    console.log(JSON.stringify({ shape: "1B", mode: "io", impl: "tune", ...io }));
    console.log(JSON.stringify({ shape: "1B", mode: "lora memory", impl: "tune", ...lora }));
    return;
  }
  const gb = (x: number) => x.toFixed(2);
  console.log("| 1B shape (tiny LoRA config) | first (fresh memory) | again (memory touched) |");
  console.log("| --- | ---: | ---: |");
  console.log(
    `| random init (M parameters/s) | ${fmt(io.initParamsPerS / 1e6)} | ${
      fmt(io.initWarmParamsPerS / 1e6)
    } |`,
  );
  console.log(
    `| save merged model (GB/s; fsync ${io.fsyncS.toFixed(1)} of ${io.saveS.toFixed(1)} s) | ${
      gb(io.saveGBps)
    } | |`,
  );
  console.log(`| load (GB/s, page cache) | ${gb(io.loadGBps)} | ${gb(io.loadWarmGBps)} |`);
  console.log(
    `| LoRA run peak RSS (MiB; / fp32 weights) | ${fmt(lora.peakRssBytes / 2 ** 20)} (${
      lora.ratio.toFixed(2)
    }x) | |`,
  );
  console.log(
    `| host: first touch / retouch / plain read (GB/s) | ${gb(io.firstTouchGBps)} | ${
      gb(io.retouchGBps)
    } / ${gb(io.rawReadGBps)} |`,
  );
}

if (!Deno.env.get("OPENBLAS_NUM_THREADS")) {
  // OpenBLAS reads this when it loads (first matmul), so setting it here still takes effect.
  Deno.env.set("OPENBLAS_NUM_THREADS", String(THREADS));
}
await main();
