/**
 * Setup and saving at a realistic size (issue #17): the tiny LoRA config at the Llama-3.2-1B
 * shape (`embed_dim=2048 num_layers=16 num_heads=32 num_kv_heads=8 intermediate_dim=8192`,
 * vocabulary 320: 973M decoder-linear weights, 3.9 GB in fp32).
 *
 *   deno run -A bench/io_1b.ts            # both parts below, each in a fresh process
 *   deno run -A bench/io_1b.ts --part io  # only the first
 *   deno task bench --mode io             # the same, as rows of `deno task bench`
 *
 * - `io`: seeded random init of the base weights (parameters/s), saving the merged model and
 *   the adapter with the Hugging Face checkpointer (fp32 safetensors; GB/s of the model file,
 *   with the share of the closing fsync), and loading that file back into the model through a
 *   second checkpointer (GB/s from the page cache: the file was just written).
 * - `lora`: peak resident memory (`/usr/bin/time`'s maximum RSS) of a real LoRA run
 *   (`tune run lora_finetune_single_device --config tiny/lora_single_device` at this shape,
 *   one step, saving the merged model at the epoch end), over the fp32 base weights' bytes.
 * Also the host's speed of writing fresh memory (the page faults of a first touch) against
 * memory already touched, and a plain read of the model file: on the 2-core Firecracker/PVM VM
 * of docs/benchmarks.md a page's first touch costs ~30 us from user code and again the first
 * time the kernel reads or writes it, so a first init, a save (fresh page-cache pages) and a
 * first load into a buffer run at ~0.1-0.4 GB/s whatever the code does; the init and the load
 * are therefore timed twice, the second time into memory already touched.
 * Files go under a fresh directory of $TMPDIR (or /tmp), removed at the end. Prints one JSON
 * object per part.
 */
import { join } from "node:path";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import type { CpuBuffer } from "../src/backend/cpu/buffer.ts";
import type { DeviceBuffer } from "../src/backend/ops.ts";
import { FullModelHFCheckpointer } from "../src/checkpoint/checkpointer.ts";
import { fsyncSeconds } from "../src/checkpoint/atomic_write.ts";
import { llama } from "../src/models/builders/llama.ts";
import { createLlama } from "../src/models/llama/model.ts";
import type { LoraConfig } from "../src/models/model_spec.ts";

const HERE = new URL(".", import.meta.url).pathname;

/** The overrides that turn the tiny config into the 1B shape. */
export const SHAPE_1B_OVERRIDES = [
  "model.embed_dim=2048",
  "model.num_layers=16",
  "model.num_heads=32",
  "model.num_kv_heads=8",
  "model.intermediate_dim=8192",
];

/** configs/tiny/lora_single_device.yaml's model at the 1B shape. */
function config() {
  return llama({
    vocabSize: 320,
    numLayers: 16,
    numHeads: 32,
    numKvHeads: 8,
    embedDim: 2048,
    intermediateDim: 8192,
    maxSeqLen: 128,
    normEps: 1e-5,
    tieWordEmbeddings: false,
    ropeLayout: "half",
  });
}

const LORA: LoraConfig = {
  attnModules: ["q_proj", "v_proj", "output_proj"],
  applyToMlp: true,
  applyToOutput: true,
  rank: 8,
  alpha: 16,
  dropout: 0,
};

/** What the `io` part prints. */
export interface IoResult {
  params: number;
  weightBytes: number;
  initS: number;
  initParamsPerS: number;
  /** A second init of the same model (memory already touched). */
  initWarmS: number;
  initWarmParamsPerS: number;
  modelFileBytes: number;
  saveS: number;
  saveGBps: number;
  fsyncS: number;
  loadS: number;
  loadGBps: number;
  /** A second load into the same buffer. */
  loadWarmS: number;
  loadWarmGBps: number;
  /** GB/s of plain reads of the model file into the (touched) parameter buffer, 64 MB a read. */
  rawReadGBps: number;
  /** GB/s of writing 256 MB of fresh memory (page faults) and of writing it again (touched). */
  firstTouchGBps: number;
  retouchGBps: number;
}

/** GB/s of reading the file at `path` into `into`'s memory (its first bytes, over and over). */
function readSpeed(path: string, into: DeviceBuffer): number {
  const mem = (into as CpuBuffer).data;
  const dst = new Uint8Array(mem.buffer, mem.byteOffset, Math.min(mem.byteLength, 1 << 26));
  const file = Deno.openSync(path, { read: true });
  const t0 = performance.now();
  let total = 0;
  for (;;) {
    const n = file.readSync(dst);
    if (n === null || n === 0) break;
    total += n;
  }
  file.close();
  return total / ((performance.now() - t0) / 1000) / 1e9;
}

/** The host's speed of first-touching fresh memory against rewriting memory already touched. */
function touchSpeeds(): { firstTouchGBps: number; retouchGBps: number } {
  const n = 1 << 28;
  let t0 = performance.now();
  const a = new Uint8Array(n);
  a.fill(1);
  const first = (performance.now() - t0) / 1000;
  t0 = performance.now();
  a.fill(2);
  const again = (performance.now() - t0) / 1000;
  return { firstTouchGBps: n / first / 1e9, retouchGBps: n / again / 1e9 };
}

function ioPart(dir: string): IoResult {
  const be = new CpuBackend();
  const cfg = config();
  const model = createLlama(be, { name: "lora_llama_1b", config: cfg, lora: LORA }, {
    batch: 1,
    seqLen: 16,
    activationCheckpointing: true,
  });
  const params = model.base.layout.numParams();
  let t0 = performance.now();
  model.initRandom(0);
  const initS = (performance.now() - t0) / 1000;
  // again, into memory already touched: the generator's own speed
  t0 = performance.now();
  model.initRandom(0);
  const initWarmS = (performance.now() - t0) / 1000;

  const options = {
    checkpointDir: dir,
    checkpointFiles: [],
    outputDir: join(dir, "out"),
    modelType: "LLAMA2" as const,
    adapterCheckpoint: null,
    recipeCheckpoint: null,
    resumeFromCheckpoint: false,
  };
  const saver = new FullModelHFCheckpointer(options);
  const sync0 = fsyncSeconds();
  t0 = performance.now();
  const saved = saver.save({
    epoch: 0,
    config: cfg,
    stateDict: model.mergedStateDict(),
    adapter: { stateDict: model.adapterStateDict(), lora: LORA },
  });
  const saveS = (performance.now() - t0) / 1000;
  const fsyncS = fsyncSeconds() - sync0;
  const modelFileBytes = Deno.statSync(join(saved, "model.safetensors")).size;

  const rawReadGBps = readSpeed(join(saved, "model.safetensors"), model.base.params);
  const loader = new FullModelHFCheckpointer({ ...options, checkpointDir: saved });
  t0 = performance.now();
  const loaded = loader.load();
  model.loadStateDict(loaded.stateDict, { strict: false });
  const loadS = (performance.now() - t0) / 1000;
  // again: the kernel has now touched the buffer's pages (see the header)
  t0 = performance.now();
  model.loadStateDict(loader.load().stateDict, { strict: false });
  const loadWarmS = (performance.now() - t0) / 1000;
  model.free();
  return {
    params,
    weightBytes: params * 4,
    initS,
    initParamsPerS: params / initS,
    initWarmS,
    initWarmParamsPerS: params / initWarmS,
    modelFileBytes,
    saveS,
    saveGBps: modelFileBytes / saveS / 1e9,
    fsyncS,
    loadS,
    loadGBps: modelFileBytes / loadS / 1e9,
    loadWarmS,
    loadWarmGBps: modelFileBytes / loadWarmS / 1e9,
    rawReadGBps,
    ...touchSpeeds(),
  };
}

/** What the `lora` part prints. */
export interface LoraRunResult {
  peakRssBytes: number;
  weightBytes: number;
  ratio: number;
  /** Size of the merged model.safetensors the run saved at its epoch end. */
  mergedFileBytes: number;
  wallS: number;
}

async function loraPart(dir: string): Promise<LoraRunResult> {
  const root = join(HERE, "..");
  const args = [
    "-f",
    "%M",
    Deno.execPath(),
    "run",
    "-A",
    join(root, "cli.ts"),
    "run",
    "lora_finetune_single_device",
    "--config",
    "tiny/lora_single_device",
    ...SHAPE_1B_OVERRIDES,
    `output_dir=${join(dir, "run")}`,
    "epochs=1",
    "max_steps_per_epoch=1",
    "batch_size=1",
  ];
  const t0 = performance.now();
  const out = await new Deno.Command("/usr/bin/time", {
    args,
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const wallS = (performance.now() - t0) / 1000;
  const err = new TextDecoder().decode(out.stderr).trim();
  if (!out.success) throw new Error(`the 1B LoRA run failed:\n${err}`);
  const kb = Number(err.split("\n").pop());
  // the epoch-end save wrote the merged model (the part of the run that held copies before)
  const mergedFileBytes = Deno.statSync(join(dir, "run", "epoch_0", "model.safetensors")).size;
  const cfg = config();
  const model = createLlama(new CpuBackend(), { name: "count", config: cfg, lora: null }, {
    batch: 1,
    seqLen: 1,
    training: false,
  });
  const weightBytes = model.base.layout.numParams() * 4;
  model.free();
  return {
    peakRssBytes: kb * 1024,
    weightBytes,
    ratio: kb * 1024 / weightBytes,
    mergedFileBytes,
    wallS,
  };
}

/** Run one part in a fresh Deno process (so peak memory and JIT state are its own). */
export async function runPart(part: "io" | "lora"): Promise<IoResult | LoraRunResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "--part", part, "--child"],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`bench/io_1b.ts --part ${part} failed`);
  return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
}

if (import.meta.main) {
  const at = Deno.args.indexOf("--part");
  const part = at >= 0 ? Deno.args[at + 1] : null;
  if (Deno.args.includes("--child")) {
    const dir = Deno.makeTempDirSync({ prefix: "tune-io-1b-" });
    try {
      const r = part === "io" ? ioPart(dir) : await loraPart(dir);
      console.log(JSON.stringify(r));
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  } else {
    for (const p of part ? [part] : ["io", "lora"]) {
      console.log(JSON.stringify({ part: p, ...await runPart(p as "io" | "lora") }));
    }
  }
}
