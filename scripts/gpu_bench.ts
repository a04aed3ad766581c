/**
 * GPU benchmark (issue #10): a Llama-3.2-1B-shaped model (random initialisation, seeded),
 * seq 2048, full fine-tuning and LoRA (rank 8, alpha 16, on q and v), the largest batch in
 * {1, 2, 4, ...} that fits; tokens/s, MFU and peak memory, side by side with PyTorch on the
 * same GPU (eager and torch.compile, bench/torch_gpu_bench.py) at the same batch.
 *
 *   deno run -A scripts/gpu_bench.ts                 # both modes, table (a few minutes)
 *   deno run -A scripts/gpu_bench.ts --json          # also one JSON object per row
 *   deno run -A scripts/gpu_bench.ts --modes=lora --max-batch=16 --no-torch
 *   deno run -A scripts/gpu_bench.ts --cpu-dry-run   # no GPU: tiny shape on the CPU backend
 *   deno run -A scripts/gpu_bench.ts --tiny ...      # tiny shape on the CUDA backend (with
 *                                                    # TUNE_LIBCUDA=fake driver: no GPU)
 *   deno run -A scripts/gpu_bench.ts --modes=full --max-batch=4 --no-torch --profile --json
 *
 * --profile: after the timed steps of each batch, one more step under the CUDA backend's
 * per-op profiler (src/backend/cuda/profile.ts: CUDA events around every kernel, matmul,
 * memset and copy); for the largest batch of each mode the top 25 ops go to stderr as a
 * table (with the step's wall time, GPU busy time and host waits), and with --json one
 * line {"profile": mode, batch, ..., rows} to stdout. CUDA only (a note on --cpu-dry-run).
 *
 * Numerics (tune): fp32 master weights and AdamW moments, bf16 activations (activationDtype
 * "bf16"), bf16 frozen base under LoRA (frozenDtype "bf16"), logits in one chunk, no
 * activation checkpointing. PyTorch: fp32 parameters under torch.autocast(bfloat16) (fp32
 * master weights, bf16 matmuls), bf16 frozen base under LoRA, fp32 LoRA adapters.
 *
 * Each mode runs in its own child process (`--worker=MODE`): batches go up 1, 2, 4, ...
 * with a fresh backend per batch, and the first out-of-memory ends the search (a partly
 * built model may leak, which is why the process ends there). Each batch: one warm-up
 * step, then timed steps (zero grads, forward, loss, backward, AdamW; backend.sync()) for
 * at least --steps steps; tokens/s is the median step's.
 *
 * FLOPs per trained token (PaLM appendix B): 6·N + 12·L·H·Q·T for full fine-tuning, where
 * N counts the parameters of every matrix product (tied embeddings once: the embedding
 * lookup costs nothing, the output projection 2·V·C per token forward) and 12·L·H·Q·T is
 * attention's QK^T and AV, forward and backward, at the full (not causal-halved) T×T. Under
 * LoRA the frozen base needs no weight gradient: 4·N_base + 6·N_lora + 12·L·H·Q·T.
 * MFU = FLOPs/token · tokens/s / the GPU's dense bf16 peak (from its name; n/a if unknown).
 * Peak memory: tune's allocator reservation (live plus cached blocks) after the timed
 * steps; PyTorch's torch.cuda.max_memory_allocated (its reserved bytes are in --json).
 */
import type { Backend } from "../src/backend/ops.ts";
import type { CudaBackend } from "../src/backend/cuda/backend.ts";
import type { LlamaConfig } from "../src/models/llama/config.ts";
import type { LoraConfig, ModelSpec } from "../src/models/model_spec.ts";
import { MODEL_FAMILIES, parameterCount } from "../src/models/builders/mod.ts";
import { createLlama, type LlamaModel } from "../src/models/llama/model.ts";
import { AdamW } from "../src/optim/adamw.ts";
import { SeededRandom } from "../src/params/random.ts";
import { TuneError } from "../src/errors.ts";
import { formatProfile, type ProfileReport } from "../src/backend/cuda/profile.ts";

// ---- options --------------------------------------------------------------------------

type Mode = "full" | "lora";

function opt(name: string): string | undefined {
  return Deno.args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
}
function num(name: string, dflt: number): number {
  const s = opt(name);
  if (s === undefined) return dflt;
  const n = Number(s);
  if (!Number.isInteger(n) || n <= 0) {
    throw new TuneError(`--${name}=${s} is not a positive integer; pass e.g. --${name}=${dflt}`);
  }
  return n;
}

const DRY = Deno.args.includes("--cpu-dry-run");
/** The tiny shape of --cpu-dry-run, on the CUDA backend (tests run it on the fake driver). */
const TINY = DRY || Deno.args.includes("--tiny");
const JSON_OUT = Deno.args.includes("--json");
const PROFILE = Deno.args.includes("--profile");
const SEQ = num("seq", TINY ? 32 : 2048);
const MAX_BATCH = num("max-batch", TINY ? 4 : 64);
const STEPS = num("steps", TINY ? 2 : 5);
/** Seconds the batch search of one mode may take before it stops going up. */
const BUDGET_S = num("budget-s", DRY ? 60 : 80);
/** Seconds the whole run may take: later children get what is left (and are cut there). */
const TOTAL_S = num("total-s", DRY ? 300 : 480);
/** torchtune's num_output_chunks (tune side only; PyTorch always makes the whole logits). */
const LOGIT_CHUNKS = num("logit-chunks", 1);
const START = performance.now();

/** Seconds left of TOTAL_S, at least 1. */
function remainingS(): number {
  return Math.max(1, Math.floor(TOTAL_S - (performance.now() - START) / 1000));
}

/** LoRA of the lora rows: rank 8, alpha 16, on q and v, no dropout. */
const LORA: LoraConfig = {
  attnModules: ["q_proj", "v_proj"],
  applyToMlp: false,
  applyToOutput: false,
  rank: 8,
  alpha: 16,
  dropout: 0,
};

/** The benchmarked architecture: llama3_2_1b, or a tiny one for --cpu-dry-run. */
function benchConfig(): LlamaConfig {
  const entry = MODEL_FAMILIES.find((e) => e.name === "llama3_2_1b");
  if (!entry) throw new Error("llama3_2_1b is missing from MODEL_FAMILIES");
  const cfg = entry.config();
  if (!TINY) return cfg;
  return { ...cfg, dim: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, hiddenDim: 128, vocabSize: 256 };
}

function specFor(mode: Mode): ModelSpec {
  return {
    name: TINY ? "llama3_2_1b-tiny" : "llama3_2_1b",
    config: benchConfig(),
    lora: mode === "lora" ? LORA : null,
  };
}

// ---- FLOPs and peak -------------------------------------------------------------------

/** Training FLOPs per token (see the header) and the parameter counts behind them. */
export function flopsPerToken(
  spec: ModelSpec,
  T: number,
): { flops: number; base: number; lora: number } {
  const { base, lora } = parameterCount(spec);
  const c = spec.config;
  const attn = 12 * c.nLayers * c.nHeads * (c.dim / c.nHeads) * T;
  const flops = spec.lora ? 4 * base + 6 * lora + attn : 6 * base + attn;
  return { flops, base, lora };
}

/** Dense bf16 tensor-core peak in TFLOP/s (no sparsity) from the GPU's name, or null. */
export function peakBf16Tflops(gpuName: string): number | null {
  const n = gpuName.toUpperCase();
  if (n.includes("H200") || n.includes("GH200")) return 989;
  if (n.includes("H100")) {
    if (n.includes("PCIE")) return 756;
    if (n.includes("NVL")) return 835;
    return 989; // SXM ("H100 80GB HBM3")
  }
  if (n.includes("A100")) return 312;
  if (n.includes("L4")) return 121;
  return null;
}

// ---- tune worker (one mode, batches going up) -----------------------------------------

/** One measured (or failed) batch of a mode, as printed on the worker's stdout. */
interface TuneRow {
  mode: Mode;
  batch: number;
  oom?: boolean;
  error?: string;
  tokens_per_s?: number;
  step_s?: number;
  peak_bytes?: number;
  gpu?: string;
  /** --profile: one more step under the per-op profiler (CUDA only). */
  profile?: ProfileReport;
}

function isOom(e: unknown): boolean {
  return /out of memory|OUT_OF_MEMORY/i.test(e instanceof Error ? e.message : String(e));
}

/** Host weights for `model` (seeded normals N(0, 0.02), tiled from one 1M block: fast). */
function loadTiledRandom(model: LlamaModel, seed: number): void {
  const block = new SeededRandom(seed).fillNormal(new Float32Array(1 << 20), 0.02);
  let shift = 0;
  for (const e of model.base.layout.entries) {
    const data = new Float32Array(e.length);
    if (e.name.endsWith(".scale")) data.fill(1);
    else {
      for (let i = 0; i < data.length; i += block.length) {
        const n = Math.min(block.length, data.length - i);
        data.set(block.subarray(0, n), i);
      }
      // a different rotation per tensor so no two tensors are equal
      data.copyWithin(0, shift % Math.max(1, data.length));
      shift += 7919;
    }
    model.base.setTensor(e.name, { shape: [...e.shape], data });
  }
  if (model.adapters) model.initAdapters(seed + 1);
}

async function newBackend(): Promise<Backend> {
  if (DRY) {
    const { CpuBackend } = await import("../src/backend/cpu/backend.ts");
    return new CpuBackend();
  }
  const { createCudaBackend } = await import("../src/backend/cuda/backend.ts");
  return createCudaBackend();
}

function reserved(be: Backend): number {
  if (DRY) return Deno.memoryUsage().rss;
  return (be as CudaBackend).bytesReserved();
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Measure one batch: fresh backend, model, optimizer; warm-up, then timed steps. */
async function measure(mode: Mode, B: number): Promise<TuneRow> {
  const be = await newBackend();
  let model: LlamaModel | null = null;
  try {
    model = createLlama(be, specFor(mode), {
      batch: B,
      seqLen: SEQ,
      seed: 0,
      activationDtype: "bf16",
      frozenDtype: mode === "lora" ? "bf16" : "f32",
      logitChunks: LOGIT_CHUNKS,
    });
    loadTiledRandom(model, 0);
    const m = model;
    const N = B * SEQ;
    const tokens = new Int32Array(N); // (B, T)
    const targets = new Int32Array(N); // (B, T)
    const rng = new SeededRandom(1);
    const V = m.cfg.vocabSize;
    for (let i = 0; i < N; i++) tokens[i] = Math.floor(rng.uniform() * V) % V;
    for (let i = 0; i < N; i++) targets[i] = i + 1 < N ? tokens[i + 1] : 0;
    const optim = new AdamW(be, m.trainable, {
      lr: 1e-5,
      betas: [0.9, 0.95],
      eps: 1e-8,
      weightDecay: 0.01,
    });
    const step = () => {
      m.zeroGrad();
      m.lossAndBackward(tokens, targets, 1 / N);
      optim.step();
      be.sync();
    };
    step(); // warm-up (kernel loads, cuBLASLt heuristics, first touch)
    const times: number[] = [];
    const t0 = performance.now();
    while (times.length < STEPS || (performance.now() - t0 < 2000 && times.length < 4 * STEPS)) {
      const t = performance.now();
      step();
      times.push((performance.now() - t) / 1000);
    }
    const s = median(times);
    const gpu = DRY ? "cpu" : (be as CudaBackend).info.name;
    const peak = reserved(be);
    let profile: ProfileReport | undefined;
    if (PROFILE && !DRY) {
      const cb = be as CudaBackend;
      cb.startProfile();
      step();
      cb.stopProfile();
      profile = cb.lastProfile!;
    }
    return { mode, batch: B, tokens_per_s: N / s, step_s: s, peak_bytes: peak, gpu, profile };
  } catch (e) {
    if (isOom(e)) return { mode, batch: B, oom: true };
    return { mode, batch: B, error: (e instanceof Error ? e.message : String(e)).split("\n")[0] };
  } finally {
    try {
      be.sync();
      model?.free();
      if (!DRY) (be as CudaBackend).destroy();
    } catch { /* the error above is the one reported */ }
  }
}

/** Worker: batches 1, 2, 4, ... up to MAX_BATCH or the first failure or the time budget. */
async function worker(mode: Mode): Promise<void> {
  const t0 = performance.now();
  for (let B = 1; B <= MAX_BATCH; B *= 2) {
    const row = await measure(mode, B);
    console.log(JSON.stringify(row));
    if (row.oom || row.error) break;
    if ((performance.now() - t0) / 1000 > BUDGET_S) {
      console.log(JSON.stringify({ mode, batch: B, note: "time budget reached" }));
      break;
    }
  }
}

// ---- parent: workers, PyTorch, table --------------------------------------------------

interface Row {
  mode: Mode;
  impl: string;
  batch: number;
  tokensPerS: number | null;
  peakBytes: number | null;
  note: string;
  raw: unknown;
}

function runChild(
  cmd: string,
  args: string[],
  timeoutS: number,
): { lines: unknown[]; err: string } {
  const r = new Deno.Command("timeout", {
    args: [String(timeoutS), cmd, ...args],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const out = new TextDecoder().decode(r.stdout);
  const lines: unknown[] = [];
  for (const l of out.split("\n")) {
    if (l.startsWith("{")) {
      try {
        lines.push(JSON.parse(l));
      } catch { /* not a result line */ }
    }
  }
  if (r.code === 124) return { lines, err: `timed out after ${timeoutS} s` };
  const err = r.success
    ? ""
    : new TextDecoder().decode(r.stderr).trim().split("\n").slice(-2).join(" | ") ||
      `exit ${r.code}`;
  return { lines, err };
}

function tuneMode(mode: Mode): { row: Row; gpu: string; profile?: ProfileReport } {
  const pass = Deno.args.filter((a) =>
    /^--(seq|max-batch|steps|budget-s|logit-chunks|cpu-dry-run|tiny|profile)/.test(a)
  );
  const { lines, err } = runChild(
    Deno.execPath(),
    ["run", "-A", new URL(import.meta.url).pathname, `--worker=${mode}`, ...pass],
    Math.min(BUDGET_S + 120, remainingS()),
  );
  const rows = lines as TuneRow[];
  const ok = rows.filter((r) => r.tokens_per_s !== undefined);
  const best = ok.at(-1);
  const stop = rows.find((r) => r.oom || r.error);
  const why = stop?.oom
    ? `B=${stop.batch} out of memory`
    : stop?.error
    ? `B=${stop.batch}: ${stop.error}`
    : "";
  const note = !best
    ? (why || err || "no result")
    : why
    ? `largest; ${why}`
    : `capped (max ${MAX_BATCH} or time)`;
  return {
    row: {
      mode,
      impl: "tune",
      batch: best?.batch ?? 0,
      tokensPerS: best?.tokens_per_s ?? null,
      peakBytes: best?.peak_bytes ?? null,
      note,
      raw: rows.map(({ profile: _, ...r }) => r),
    },
    gpu: best?.gpu ?? "",
    profile: best?.profile,
  };
}

/** --profile: the table of the mode's largest batch to stderr, and a JSON line with --json. */
function printProfile(mode: Mode, batch: number, p: ProfileReport | undefined): void {
  if (DRY) {
    console.error(
      "# --profile: the per-op profiler is CUDA-only; nothing to profile on --cpu-dry-run",
    );
    return;
  }
  if (p === undefined) {
    console.error(`# ${mode}: no profile (no batch finished)`);
    return;
  }
  console.error(`# ${mode}: per-op GPU profile of one step at batch ${batch} (seq ${SEQ})`);
  for (const l of formatProfile(p, 25)) console.error(l);
  if (JSON_OUT) {
    console.log(JSON.stringify({
      profile: mode,
      batch,
      seq: SEQ,
      wall_ms: p.wallMs,
      gpu_busy_ms: p.gpuBusyMs,
      gpu_span_ms: p.gpuSpanMs,
      ops: p.ops,
      host_waits: p.hostWaits,
      new_device_bytes: p.newDeviceBytes,
      rows: p.rows,
    }));
  }
}

function torchRows(mode: Mode, batch: number, impls: readonly string[]): Row[] {
  const script = new URL("../bench/torch_gpu_bench.py", import.meta.url).pathname;
  const python = Deno.env.get("TUNE_PYTHON") ?? (DRY ? "/usr/bin/python3" : "python3");
  const rows: Row[] = [];
  for (const impl of impls) {
    const args = [
      script,
      "--mode",
      mode,
      "--impl",
      impl,
      "--batch",
      String(batch),
      "--seq",
      String(SEQ),
    ];
    args.push("--steps", String(STEPS));
    if (DRY) args.push("--device", "cpu");
    if (TINY) args.push("--tiny");
    let res: { lines: unknown[]; err: string };
    try {
      res = runChild(python, args, Math.min(impl === "compile" ? 420 : 180, remainingS()));
    } catch (e) {
      res = { lines: [], err: `${python}: ${e instanceof Error ? e.message : e}` };
    }
    const r = res.lines.at(-1) as Record<string, unknown> | undefined;
    const note = r?.error ? String(r.error) : r ? "" : res.err || "no result";
    rows.push({
      mode,
      impl: `torch ${impl}`,
      batch,
      tokensPerS: typeof r?.tokens_per_s === "number" ? r.tokens_per_s : null,
      peakBytes: typeof r?.peak_bytes === "number" ? r.peak_bytes : null,
      note: note.slice(0, 100),
      raw: r ?? null,
    });
  }
  return rows;
}

function fmt(x: number | null, digits: number): string {
  return x === null || !Number.isFinite(x) ? "n/a" : x.toFixed(digits);
}

function main(): void {
  const w = opt("worker");
  if (w !== undefined) {
    if (w !== "full" && w !== "lora") throw new TuneError(`--worker=${w}: expected full or lora`);
    return void worker(w).catch((e) => {
      console.log(
        JSON.stringify({ mode: w, batch: 0, error: String(e instanceof Error ? e.message : e) }),
      );
    });
  }
  if (!DRY) {
    // fail fast here (one line) when there is no driver, before starting any child
    import("../ffi/cuda.ts").then(({ cuda }) => {
      cuda();
      run();
    }).catch((e) => {
      if (e instanceof TuneError) {
        console.error(`error: ${e.message}`);
        Deno.exit(1);
      }
      throw e;
    });
  } else run();
}

function run(): void {
  const modes = (opt("modes") ?? "full,lora").split(",") as Mode[];
  for (const m of modes) {
    if (m !== "full" && m !== "lora") {
      throw new TuneError(`--modes=${m}: expected full and/or lora`);
    }
  }
  const noTorch = Deno.args.includes("--no-torch");
  // --torch=eager skips torch.compile (its compile takes a minute or two of a short lease).
  const impls = noTorch ? [] : (opt("torch") ?? "eager,compile").split(",");
  const rows: Row[] = [];
  let gpu = "";
  const batches = new Map<Mode, number>();
  for (const mode of modes) {
    console.error(`# ${mode}: tune batch search (seq ${SEQ}, max batch ${MAX_BATCH})`);
    const t = tuneMode(mode);
    gpu ||= t.gpu;
    rows.push(t.row);
    batches.set(mode, t.row.batch);
    if (PROFILE) printProfile(mode, t.row.batch, t.profile);
    if (impls.includes("eager") && t.row.batch > 0) {
      console.error(`# ${mode}: PyTorch eager at batch ${t.row.batch}`);
      rows.push(...torchRows(mode, t.row.batch, ["eager"]));
    }
  }
  // torch.compile last: its compile time must not starve the tune and eager rows of the lease.
  for (const mode of modes) {
    const batch = batches.get(mode) ?? 0;
    if (impls.includes("compile") && batch > 0) {
      console.error(`# ${mode}: torch.compile at batch ${batch}`);
      const at = rows.findLastIndex((r) => r.mode === mode);
      rows.splice(at + 1, 0, ...torchRows(mode, batch, ["compile"]));
    }
  }
  const peak = DRY ? null : peakBf16Tflops(gpu);
  console.log(
    `GPU: ${gpu || "?"}; dense bf16 peak ${
      peak === null ? "unknown (MFU n/a)" : `${peak} TFLOP/s`
    }`,
  );
  console.log(
    "FLOPs/token: full 6N + 12LHQT, LoRA 4N + 6N_lora + 12LHQT (N: matmul parameters, tied once)",
  );
  const head = ["mode", "impl", "batch", "tokens/s", "MFU %", "peak GiB", "tune/this", "note"];
  const table: string[][] = [head];
  for (const r of rows) {
    const { flops } = flopsPerToken(specFor(r.mode), SEQ);
    const mfu = peak !== null && r.tokensPerS !== null
      ? (100 * flops * r.tokensPerS) / (peak * 1e12)
      : null;
    const tune = rows.find((x) => x.mode === r.mode && x.impl === "tune")?.tokensPerS ?? null;
    const ratio = tune !== null && r.tokensPerS ? tune / r.tokensPerS : null;
    table.push([
      r.mode,
      r.impl,
      String(r.batch),
      fmt(r.tokensPerS, 0),
      fmt(mfu, 1),
      fmt(r.peakBytes === null ? null : r.peakBytes / 2 ** 30, 2),
      r.impl === "tune" ? "" : fmt(ratio, 2),
      r.note,
    ]);
    if (JSON_OUT) {
      console.log(JSON.stringify({
        mode: r.mode,
        impl: r.impl,
        batch: r.batch,
        seq: SEQ,
        tokens_per_s: r.tokensPerS,
        mfu_percent: mfu,
        flops_per_token: flops,
        peak_bytes: r.peakBytes,
        gpu,
        raw: r.raw,
      }));
    }
  }
  const widths = head.map((_, i) => Math.max(...table.map((row) => row[i].length)));
  for (const row of table) console.log(row.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd());
}

if (import.meta.main) main();
