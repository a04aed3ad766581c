/**
 * bitsandbytes' PagedAdamW on the CUDA backend without a GPU (tests/cuda_paged_adamw_run.ts in
 * a child process, so the library overrides never leak): against the fake driver's race
 * detector, steps over pages that split layout groups keep every copy ordered and the device
 * holds two staging pages instead of the moments; against the emulating driver, which runs
 * the kernels, the weights and moments are bitwise AdamW's, and `tune run` on device=cuda
 * with `optimizer._component_=bitsandbytes.optim.PagedAdamW` gives torch.optim.AdamW's
 * metrics bitwise, prints where the moments live, and resumes bitwise from a checkpoint.
 */
import assert from "node:assert/strict";
import { buildFakeDriver, hasGcc, runDriverChild, tuneOnDriver } from "./_fake_driver.ts";
import { buildEmulator, hasGpp } from "./_emulator.ts";
import { readMetrics, timeless } from "./_recipe_helpers.ts";

const RUN = new URL("./cuda_paged_adamw_run.ts", import.meta.url).pathname;

const runChild = (lib: string, ...args: string[]) =>
  runDriverChild(RUN, lib, /all paged AdamW checks passed/, ...args);

Deno.test("PagedAdamW keeps its copies ordered and its moments off the device (fake driver)", {
  ignore: !hasGcc(),
}, () => {
  const tmp = Deno.makeTempDirSync({ prefix: "tune_paged_" });
  try {
    runChild(buildFakeDriver(tmp));
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

/** The tiny full config, 3 steps, on the emulated device; its stderr, memory and metrics. */
function tuneRun(lib: string, dir: string, ...extra: string[]) {
  const { err, memory } = tuneOnDriver(lib, [
    "full_finetune_single_device",
    "--config",
    "tiny/full_single_device",
    "device=cuda",
    "model.num_layers=1",
    "tokenizer.max_seq_len=16",
    "batch_size=2",
    "epochs=1",
    "max_steps_per_epoch=3",
    "lr_scheduler.num_warmup_steps=0",
    "log_peak_memory_stats=True",
    `output_dir=${dir}`,
    ...extra,
  ]);
  return { err, memory: memory!, metrics: readMetrics(dir).map(timeless) };
}

Deno.test(
  "PagedAdamW gives AdamW's weights, moments and metrics bitwise and resumes bitwise on device=cuda (emulated kernels)",
  { ignore: !hasGpp() },
  () => {
    const tmp = Deno.makeTempDirSync({ prefix: "tune_paged_emu_" });
    try {
      const lib = buildEmulator(tmp);
      runChild(lib, "--emulated");
      const paged = "optimizer._component_=bitsandbytes.optim.PagedAdamW";
      const plain = tuneRun(lib, `${tmp}/adamw`);
      const whole = tuneRun(lib, `${tmp}/paged`, paged);
      assert.equal(plain.metrics.length, 3);
      assert.deepEqual(whole.metrics, plain.metrics);
      const [a, b] = [plain.memory, whole.memory];
      console.log(`AdamW memory (bytes): ${JSON.stringify(a)}`);
      console.log(`PagedAdamW memory (bytes): ${JSON.stringify(b)}`);
      assert.equal(b.parameters, a.parameters);
      assert.ok(b.optimizerHost >= a.optimizer, "the moments are not in host memory");
      assert.equal(b.optimizer, a.optimizer, "one page holds the tiny model's moments");
      // stop after step 2, then resume: step 3 as in the run without the stop
      tuneRun(lib, `${tmp}/resumed`, paged, "stop_after_steps=2");
      const resumed = tuneRun(lib, `${tmp}/resumed`, paged, "resume_from_checkpoint=True");
      assert.match(resumed.err, /resuming from step 2/);
      assert.deepEqual(resumed.metrics, plain.metrics);
    } finally {
      Deno.removeSync(tmp, { recursive: true });
    }
  },
);
