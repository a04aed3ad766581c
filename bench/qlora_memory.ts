/**
 * Peak resident memory of one training step on the CPU: LoRA (fp32 base, AdamW) vs QLoRA
 * (NF4 base, AdamW) vs QLoRA + bitsandbytes' 8-bit AdamW (stepped after the backward, or
 * inside it: optimizer_in_bwd), on the Llama-3.2-1B layer shape
 * with random weights (the tiny config's vocabulary of 320, so the embedding is negligible:
 * embed_dim 2048, 16 layers, 32 heads, 8 kv heads, intermediate 8192; LoRA as torchtune's
 * 1B_qlora_single_device: q/v/output_proj and the MLP, rank 64, alpha 128).
 *
 *   deno run -A bench/qlora_memory.ts            # the four modes, each in a fresh process
 *   deno run -A bench/qlora_memory.ts --mode qlora
 *   deno run -A bench/qlora_memory.ts --device cuda            # the GPU session's rows
 *   TUNE_LIBCUDA=fake.so deno run -A bench/qlora_memory.ts --device cuda --tiny   # no GPU
 *
 * Each child builds the model (random weights set one tensor at a time), runs one step
 * (forward, backward, optimizer) on a (1, 16) batch and prints VmRSS after setup and VmHWM
 * (the process's peak) after the step, from /proc/self/status, with the model's own tally.
 * With `--device cuda` it also prints the device memory: bytes live after setup and the
 * caching allocator's reserve after the step (it only grows, so it is the step's peak, as
 * torch.cuda.max_memory_reserved). `--tiny` shrinks the shape (2 layers, embed_dim 256: each NF4 weight a multiple of 16384) so
 * the CUDA path runs on the emulator's fake driver in a test.
 */
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import type { Backend } from "../src/backend/ops.ts";
import type { CudaBackend } from "../src/backend/cuda/backend.ts";
import { createLlama, crossEntropyHead } from "../src/models/llama/model.ts";
import { OptimizerInBackward } from "../src/training/optimizer_in_bwd.ts";
import { baseLayout } from "../src/models/llama/layout.ts";
import { llama } from "../src/models/builders/llama.ts";
import { AdamW } from "../src/optim/adamw.ts";
import { AdamW8bit } from "../src/optim/adamw8bit.ts";

/**
 * Random base weights one tensor at a time from a fast xorshift (uniform with std 0.02;
 * norms 1), then fresh adapters: the model's own initRandom (Box-Muller normals) takes tens
 * of minutes for 1B weights on a loaded 2-core host, and the values do not change memory.
 */
function fastRandomInit(model: ReturnType<typeof createLlama>): void {
  let x = 0x9e3779b9;
  const a = 0.02 * Math.sqrt(3);
  for (const e of baseLayout(model.cfg).entries) {
    const data = new Float32Array(e.length);
    if (e.name.endsWith(".scale")) data.fill(1);
    else {
      for (let i = 0; i < data.length; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        data[i] = ((x >>> 0) / 4294967296 * 2 - 1) * a;
      }
    }
    const t = { shape: [...e.shape], data };
    if (model.nf4?.has(e.name)) model.nf4.setTensor(e.name, t);
    else model.base.setTensor(e.name, t);
  }
  model.initAdapters(0);
}

const MODES = ["lora", "qlora", "qlora_adamw8bit", "qlora_adamw8bit_in_bwd"] as const;
type Mode = typeof MODES[number];

function status(key: string): number {
  const line = Deno.readTextFileSync("/proc/self/status").split("\n").find((l) =>
    l.startsWith(key)
  );
  return Number(line!.split(/\s+/)[1]) * 1024;
}

type Device = "cpu" | "cuda";

async function newBackend(device: Device): Promise<Backend> {
  if (device === "cpu") return new CpuBackend();
  const { createCudaBackend } = await import("../src/backend/cuda/backend.ts");
  return createCudaBackend();
}

async function child(mode: Mode, device: Device, tiny: boolean): Promise<void> {
  const config = llama({
    vocabSize: 320,
    numLayers: tiny ? 2 : 16,
    numHeads: tiny ? 4 : 32,
    numKvHeads: tiny ? 2 : 8,
    embedDim: tiny ? 256 : 2048,
    intermediateDim: tiny ? 512 : 8192,
    maxSeqLen: 128,
    normEps: 1e-5,
    ropeBase: 500000,
  });
  const lora = {
    attnModules: ["q_proj", "v_proj", "output_proj"] as ("q_proj" | "v_proj" | "output_proj")[],
    applyToMlp: true,
    applyToOutput: false,
    rank: 64,
    alpha: 128,
    dropout: 0,
    ...(mode === "lora" ? {} : { quantizeBase: true }),
  };
  const be = await newBackend(device);
  const B = 1, T = 16;
  const t0 = performance.now();
  const model = createLlama(be, { name: mode, config, lora }, {
    batch: B,
    seqLen: T,
    activationCheckpointing: true,
    optimizerMoments: !mode.startsWith("qlora_adamw8bit"),
  });
  fastRandomInit(model);
  const hp = { lr: 1e-4, betas: [0.9, 0.999] as [number, number], eps: 1e-8, weightDecay: 0.01 };
  const opt = mode.startsWith("qlora_adamw8bit")
    ? new AdamW8bit(be, model.trainable, hp)
    : new AdamW(be, model.trainable, hp);
  const setupRss = status("VmRSS:");
  const cuda = device === "cuda" ? be as CudaBackend : null;
  const setupDeviceBytes = cuda?.bytesInUse() ?? 0;
  const t1 = performance.now();
  const tokens = Int32Array.from({ length: B * T }, (_, i) => (i * 7 + 3) % 320);
  const targets = Int32Array.from({ length: B * T }, (_, i) => (i * 7 + 10) % 320);
  model.zeroGrad();
  let r;
  if (mode === "qlora_adamw8bit_in_bwd") {
    // optimizer_in_bwd: each group steps (and zeroes its gradient) inside the backward
    const hooks = new OptimizerInBackward(be, opt);
    model.groupHooks = hooks;
    hooks.begin(hp.lr);
    r = await model.trainStep({ tokens, targets }, crossEntropyHead(1 / (B * T)));
    hooks.finish();
  } else {
    r = model.lossAndBackward(tokens, targets, 1 / (B * T));
    opt.step();
  }
  const t2 = performance.now();
  const mem = model.memory();
  const optimizerBytes = opt instanceof AdamW8bit ? opt.stateBytes() : mem.optimizer;
  console.log(JSON.stringify({
    mode,
    device,
    shape: tiny ? "tiny" : "llama3_2_1b",
    loss: r.lossSum / r.tokens,
    ...(cuda ? { setupDeviceBytes, peakDeviceReservedBytes: cuda.bytesReserved() } : {}),
    setupRssBytes: setupRss,
    peakRssBytes: status("VmHWM:"),
    parameterBytes: mem.parameters,
    nf4Weights: model.nf4?.numel() ?? 0,
    nf4Bytes: model.nf4?.bytes() ?? 0,
    trainableParams: model.trainable.layout.numParams(),
    gradientBytes: mem.gradients,
    optimizerBytes,
    activationBytes: mem.activations + mem.scratch,
    setupS: (t1 - t0) / 1000,
    stepS: (t2 - t1) / 1000,
  }));
}

const args = Deno.args;
const at = args.indexOf("--mode");
const dev = args.indexOf("--device");
const device = (dev >= 0 ? args[dev + 1] : "cpu") as Device;
if (device !== "cpu" && device !== "cuda") throw new Error(`--device cpu|cuda, got ${device}`);
const tiny = args.includes("--tiny");
if (at >= 0) {
  const mode = args[at + 1] as Mode;
  if (!MODES.includes(mode)) throw new Error(`--mode ${MODES.join("|")}, got ${mode}`);
  await child(mode, device, tiny);
} else {
  for (const mode of MODES) {
    const pass = ["--device", device, ...(tiny ? ["--tiny"] : [])];
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(import.meta.url).pathname, "--mode", mode, ...pass],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    console.log(text);
    if (out.code !== 0) Deno.exit(out.code);
  }
}
