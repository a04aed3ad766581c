/**
 * Activation offloading on the CUDA backend without a GPU (tests/cuda_offload_run.ts in a
 * child process, so the library overrides never leak): against the fake driver, whose race
 * detector reports any access that the side stream's events leave unordered, LoRA and full
 * steps with checkpointing on and off keep every copy ordered, and the device holds fewer
 * bytes at the end of forward (printed beside the bytes offloaded); against the emulating
 * driver, which runs the kernels, the losses and gradients are bitwise those of offloading off.
 */
import assert from "node:assert/strict";
import { buildFakeDriver, hasGcc } from "./_fake_driver.ts";
import { buildEmulator, hasGpp } from "./_emulator.ts";

const RUN = new URL("./cuda_offload_run.ts", import.meta.url).pathname;

function runChild(lib: string, ...args: string[]): string {
  const r = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", RUN, lib, ...args],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const out = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  console.log(out.trim());
  assert.equal(r.code, 0, out);
  assert.match(out, /all offload checks passed/);
  return out;
}

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
  "activation offloading gives bitwise the losses and gradients of offloading off (emulated kernels)",
  {
    ignore: !hasGpp(),
  },
  () => {
    const tmp = Deno.makeTempDirSync({ prefix: "tune_offload_emu_" });
    try {
      const out = runChild(buildEmulator(tmp), "--emulated");
      assert.equal(out.match(/^ok {2}offloading off and on: bitwise/gm)?.length, 2, out);
    } finally {
      Deno.removeSync(tmp, { recursive: true });
    }
  },
);
