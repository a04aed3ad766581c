/**
 * `fsdp_cpu_offload: True` (src/training/sharded.ts host state): each rank's slices (values,
 * gradients, AdamW moments) live in host memory and the step runs there.
 * - On the CPU, through the test seam TUNE_TEST_FSDP_CPU_OFFLOAD=1 (users get the refusal:
 *   the state is already in host memory), 2 processes over loopback TCP with the host state
 *   on (under LoRA the frozen base's slices too) give the device-state run's metrics bitwise
 *   (full, LoRA and QLoRA, optimizer_in_bwd too),
 *   resume bitwise from a mid-run checkpoint, and log_peak_memory_stats moves the slices and
 *   moments from the device figures to host ones.
 * - On device=cuda without a GPU (the emulating driver of tests/_emulator.ts runs the
 *   kernels): one process with fsdp_cpu_offload=True runs sharded (a world of one, as FSDP
 *   on one GPU) with its state on the host, and its losses follow the unsharded run's
 *   (relative 1e-5: host AdamW against the CUDA kernel) while the device holds less.
 * - 8-bit AdamW with fsdp_cpu_offload=True is refused in one line.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { buildEmulator, hasGpp } from "./_emulator.ts";
import { driverEnv } from "./_fake_driver.ts";
import {
  type Metrics,
  readMetrics,
  type Run,
  timeless,
  tuneWithEnv,
  withTmp,
} from "./_recipe_helpers.ts";
import { HostValues } from "../src/training/host_state.ts";
import { roundBf16 } from "../src/backend/cpu/buffer.ts";

const SEAM = { TUNE_TEST_FSDP_CPU_OFFLOAD: "1" };
const OFFLOAD = "fsdp_cpu_offload=True";
const SHORT = ["epochs=2", "max_steps_per_epoch=2", "seed=0", "log_peak_memory_stats=True"];

async function runOk(env: Record<string, string>, ...args: string[]): Promise<Run> {
  const r = await tuneWithEnv(env, "run", ...args);
  assert.equal(r.code, 0, `tune run ${args.join(" ")} failed:\n${r.stderr}`);
  return r;
}

/** rank 0's `memory (bytes...)` figures. */
function memoryOf(stderr: string): Record<string, number> {
  const m = stderr.match(/^memory \(bytes[^)]*\): (\{.*\})$/m);
  assert.ok(m, `a memory line:\n${stderr}`);
  return JSON.parse(m[1]);
}

/**
 * The host-state run holds on the device only the group buffers and one staging slice: its
 * parameters, gradients and optimizer figures drop by the slices and moments, which its
 * host figures carry.
 */
function assertMemoryMoved(label: string, device: string, host: string): void {
  const d = memoryOf(device), h = memoryOf(host);
  console.log(`${label}: device state: ${JSON.stringify(d)}`);
  console.log(`${label}: host state:   ${JSON.stringify(h)}`);
  const deviceOf = (m: Record<string, number>) =>
    m.parameters + m.gradients + m.optimizer + (m.staging ?? 0);
  assert.equal(h.optimizer, 0, `${label}: no moments on the device`);
  assert.equal(h.optimizerHost, d.optimizer, `${label}: the moments are in host memory`);
  // AdamW: m and v over the trainable slices; the values add a LoRA base's slices
  assert.equal(h.optimizerHost, 2 * h.gradientsHost);
  assert.ok(h.parametersHost >= h.gradientsHost);
  assert.equal(h.parameters, d.parameters - h.parametersHost, `${label}: value slices moved`);
  assert.equal(h.gradients, d.gradients - h.gradientsHost, `${label}: gradient slices moved`);
  assert.ok(h.staging > 0 && h.staging <= h.parametersHost, `${label}: slices of staging`);
  console.log(
    `${label}: device params+grads+optimizer ${deviceOf(d)} -> ${deviceOf(h)} bytes ` +
      `(host ${h.parametersHost + h.gradientsHost + h.optimizerHost})`,
  );
  assert.ok(deviceOf(h) < deviceOf(d));
}

function sameMetrics(label: string, actual: Metrics, expected: Metrics): void {
  assert.ok(expected.length >= 3, `${label}: steps ran`);
  assert.equal(actual.map(timeless).join("\n"), expected.map(timeless).join("\n"), label);
  console.log(
    `${label}: bitwise equal over ${actual.length} steps (losses ` +
      `${actual.map((m) => m.loss.toFixed(6)).join(" ")})`,
  );
}

for (
  const [label, recipe, config, ...extra] of [
    ["full", "full_finetune_distributed", "tiny/full_distributed"],
    ["lora", "lora_finetune_distributed", "tiny/lora_distributed"],
    // QLoRA: the base's slices on the host, its NF4 codes on the device
    ["qlora", "lora_finetune_distributed", "tiny/qlora_single_device", "batch_size=2"],
  ] as const
) {
  Deno.test(`${recipe} (${label}) on 2 ranks with fsdp_cpu_offload=True gives the device-state metrics bitwise and resumes bitwise (CPU seam)`, async () => {
    await withTmp(async (dir) => {
      const run = ["--nproc_per_node", "2", recipe, "--config", config, ...extra, ...SHORT];
      const dev = join(dir, "device"), host = join(dir, "host"), cut = join(dir, "cut");
      const d = await runOk({}, ...run, `output_dir=${dev}`);
      const h = await runOk(SEAM, ...run, OFFLOAD, `output_dir=${host}`);
      assert.match(h.stderr, /rank 1\/2 \(pid \d+\): optimizer state \d+ bytes in host memory/);
      assert.match(h.stderr, /rank 0\/2: trainable params\+grads resident on the device \d+/);
      sameMetrics(`${label}: host state vs device state`, readMetrics(host), readMetrics(dev));
      assertMemoryMoved(label, d.stderr, h.stderr);
      // stop after step 3 (mid epoch 1), resume with the state still on the host
      await runOk(SEAM, ...run, OFFLOAD, `output_dir=${cut}`, "stop_after_steps=3");
      await runOk(SEAM, ...run, OFFLOAD, `output_dir=${cut}`, "resume_from_checkpoint=True");
      sameMetrics(
        `${label}: host state stopped at 3 + resumed`,
        readMetrics(cut),
        readMetrics(dev),
      );
    });
  });
}

Deno.test("optimizer_in_bwd=True with fsdp_cpu_offload=True on 2 ranks steps each group's host slice: the device-state metrics bitwise (CPU seam)", async () => {
  await withTmp(async (dir) => {
    const run = [
      "--nproc_per_node",
      "2",
      "full_finetune_distributed",
      "--config",
      "tiny/full_distributed",
      ...SHORT,
      "optimizer_in_bwd=True",
      "clip_grad_norm=null",
    ];
    const dev = join(dir, "device"), host = join(dir, "host");
    await runOk({}, ...run, `output_dir=${dev}`);
    await runOk(SEAM, ...run, OFFLOAD, `output_dir=${host}`);
    sameMetrics("optimizer_in_bwd: host vs device state", readMetrics(host), readMetrics(dev));
  });
});

Deno.test("fsdp_cpu_offload=True is refused in one line on device=cpu and with 8-bit AdamW", async () => {
  const base = ["full_finetune_distributed", "--config", "tiny/full_distributed", "epochs=1"];
  const last = (s: string) => s.trim().split("\n").at(-1)!;
  const cpu = await tuneWithEnv({}, "run", ...base, OFFLOAD);
  assert.notEqual(cpu.code, 0);
  assert.match(last(cpu.stderr), /^tune: fsdp_cpu_offload=True .* device=cpu it is already there/);
  const eight = await tuneWithEnv(
    SEAM,
    "run",
    ...base,
    OFFLOAD,
    "optimizer._component_=bitsandbytes.optim.AdamW8bit",
  );
  assert.notEqual(eight.code, 0);
  assert.match(
    last(eight.stderr),
    /^tune: fsdp_cpu_offload=True runs torch.optim.AdamW on the host; .* set fsdp_cpu_offload=False, or use torch.optim.AdamW$/,
  );
});

Deno.test("HostValues keeps bf16 slices in 2 bytes an element and gives them back bitwise", () => {
  const n = 1000;
  const vals = Float32Array.from(
    { length: n },
    (_, i) => roundBf16(Math.sin(i) * 10 ** (i % 7 - 3)),
  );
  vals[3] = -0, vals[4] = Infinity, vals[5] = -1e-40; // a signed zero, an infinity, a subnormal
  vals[5] = roundBf16(vals[5]);
  const bf = new HostValues(n + 10, "bf16"), f32 = new HostValues(n, "f32");
  bf.set(10, vals);
  f32.set(0, vals);
  assert.equal(bf.bytes, 2 * (n + 10));
  assert.equal(f32.bytes, 4 * n);
  const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);
  assert.deepEqual(bits(bf.get(10, n)), bits(vals));
  assert.deepEqual(bits(f32.get(0, n)), bits(vals));
  assert.deepEqual([...bf.get(0, 10)], new Array(10).fill(0));
});

/**
 * One process on the emulated device, fsdp_cpu_offload off (unsharded) and on (a world of
 * one with host state): the losses within relative 1e-5 and the memory lines.
 */
async function emulatedPair(
  env: Record<string, string>,
  dir: string,
  label: string,
  recipe: string,
  config: string,
  extra: string[],
) {
  const run = [
    "--nproc_per_node",
    "1",
    recipe,
    "--config",
    config,
    "device=cuda",
    "model.num_layers=1",
    "tokenizer.max_seq_len=16",
    "batch_size=2",
    "epochs=1",
    "lr_scheduler.num_warmup_steps=0",
    "seed=0",
    "log_peak_memory_stats=True",
    ...extra,
  ];
  const dev = join(dir, `${label}_device`), host = join(dir, `${label}_host`);
  const d = await runOk(env, ...run, `output_dir=${dev}`);
  const h = await runOk(env, ...run, OFFLOAD, `output_dir=${host}`);
  // one process without offload is not sharded; with it, a world of one
  assert.doesNotMatch(d.stderr, /rank 0\/1/);
  assert.match(h.stderr, /rank 0\/1 \(pid \d+\): optimizer state \d+ bytes in host memory/);
  const a = readMetrics(host), b = readMetrics(dev);
  assert.ok(a.length >= 2 && a.length === b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    assert.equal(a[i].tokens, b[i].tokens);
    worst = Math.max(worst, Math.abs(a[i].loss - b[i].loss) / Math.abs(b[i].loss));
  }
  console.log(
    `${label} cuda (emulated): losses ${a.map((m) => m.loss.toFixed(6)).join(" ")}; worst ` +
      `relative diff host state vs device state ${worst.toExponential(2)} (rtol 1e-5)`,
  );
  assert.ok(worst <= 1e-5);
  // the unsharded run holds whole buffers and the moments; the host-state one its group
  // slots and the staging (with one tiny layer, about as large as the whole values)
  const md = memoryOf(d.stderr), mh = memoryOf(h.stderr);
  console.log(`${label} cuda (emulated) device state: ${JSON.stringify(md)}`);
  console.log(`${label} cuda (emulated) host state:   ${JSON.stringify(mh)}`);
  assert.equal(mh.optimizer, 0);
  assert.equal(mh.optimizerHost, md.optimizer);
  const held = (m: Record<string, number>) =>
    m.parameters + m.gradients + m.optimizer + (m.staging ?? 0);
  console.log(`${label} cuda (emulated): device params+grads+optimizer ${held(md)} -> ${held(mh)}`);
  assert.ok(held(mh) < held(md));
  return { mh, err: h.stderr };
}

Deno.test(
  "fsdp_cpu_offload=True on one process with device=cuda runs sharded with host state: the unsharded losses (relative 1e-5) and less device memory (emulated kernels; full fp32, LoRA bf16)",
  { ignore: !hasGpp() },
  async () => {
    await withTmp(async (dir) => {
      const env = driverEnv(buildEmulator(dir));
      const full = ["full_finetune_distributed", "tiny/full_distributed"] as const;
      await emulatedPair(env, dir, "full fp32", ...full, ["max_steps_per_epoch=3"]);
      const lora = ["lora_finetune_distributed", "tiny/lora_distributed"] as const;
      const steps = ["max_steps_per_epoch=2", "dtype=bf16"];
      const { mh, err } = await emulatedPair(env, dir, "lora bf16", ...lora, steps);
      // the bf16 base's slices take 2 bytes an element on the host, as on the device: in a
      // world of one, the one-process bytes
      const base = err.match(
        /rank 0\/1: frozen base .* slices (\d+) in host memory; .* one process: (\d+) bytes/,
      );
      assert.ok(base, err);
      console.log(`lora bf16: frozen base slices ${base[1]} host bytes; one process ${base[2]}`);
      assert.equal(Number(base[1]), Number(base[2]));
      assert.ok(mh.parametersHost > Number(base[1]));
    });
  },
);
