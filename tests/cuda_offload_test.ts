/**
 * Activation offloading on the CUDA backend without a GPU (tests/cuda_offload_run.ts in a
 * child process, so the library overrides never leak): against the fake driver, whose race
 * detector reports any access that the side stream's events leave unordered, LoRA and full
 * steps with checkpointing on and off keep every copy ordered, and the device holds fewer
 * bytes at the end of forward (printed beside the bytes offloaded); against the emulating
 * driver, which runs the kernels, the losses and gradients are bitwise those of offloading off,
 * and `tune run` on device=cuda takes enable_activation_offloading=True (one step of the tiny
 * LoRA config, its metrics bitwise those without).
 */
import assert from "node:assert/strict";
import { buildFakeDriver, hasGcc, runDriverChild, tuneOnDriver } from "./_fake_driver.ts";
import { buildEmulator, hasGpp } from "./_emulator.ts";
import { readMetrics, timeless } from "./_recipe_helpers.ts";

const RUN = new URL("./cuda_offload_run.ts", import.meta.url).pathname;

const runChild = (lib: string, ...args: string[]) =>
  runDriverChild(RUN, lib, /all offload checks passed/, ...args);

Deno.test("activation offloading keeps its copies ordered and saves device memory (fake driver)", {
  ignore: !hasGcc(),
}, () => {
  const tmp = Deno.makeTempDirSync({ prefix: "tune_offload_" });
  try {
    const out = runChild(buildFakeDriver(tmp));
    assert.equal(out.match(/^ok {2}offloading off and on/gm)?.length, 4, out);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

Deno.test(
  "activation offloading gives bitwise the losses and gradients of offloading off, and tune run takes it on device=cuda (emulated kernels)",
  {
    ignore: !hasGpp(),
  },
  () => {
    const tmp = Deno.makeTempDirSync({ prefix: "tune_offload_emu_" });
    try {
      const lib = buildEmulator(tmp);
      const out = runChild(lib, "--emulated");
      assert.equal(out.match(/^ok {2}offloading off and on: bitwise/gm)?.length, 2, out);
      // the recipe: one step of the tiny LoRA config (3 layers, short rows), off and on
      const metrics = ["False", "True"].map((on) => {
        const dir = `${tmp}/run_${on}`;
        const mem = tuneOnDriver(lib, [
          "lora_finetune_single_device",
          "--config",
          "tiny/lora_single_device",
          "device=cuda",
          `enable_activation_offloading=${on}`,
          "model.num_layers=3",
          "tokenizer.max_seq_len=16",
          "batch_size=2",
          "epochs=1",
          "max_steps_per_epoch=1",
          "log_peak_memory_stats=True",
          `output_dir=${dir}`,
        ]).memory!;
        console.log(`enable_activation_offloading=${on}: memory (bytes) ${JSON.stringify(mem)}`);
        assert.equal(mem.offloaded > 0, on === "True");
        return readMetrics(dir).map(timeless);
      });
      assert.equal(metrics[0].length, 1);
      assert.deepEqual(metrics[1], metrics[0]);
    } finally {
      Deno.removeSync(tmp, { recursive: true });
    }
  },
);
