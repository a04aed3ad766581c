/**
 * The CUDA backend's host side against a fake driver (tests/cuda_fake_driver.c, built
 * here with gcc): symbol binding, memory paths, GEMM mapping onto cuBLASLt (the fake
 * really multiplies; compared with the CPU backend at atol 1e-5 rtol 1e-4 for f32,
 * atol 1e-2 rtol 0.08 for bf16), launch argument packing and limits, error messages.
 * Runs in a child process so the library overrides never leak into other tests.
 */
import assert from "node:assert/strict";
import { buildFakeDriver, hasGcc } from "./_fake_driver.ts";

const DIR = new URL("./", import.meta.url).pathname;

const HAS_GCC = hasGcc();
if (!HAS_GCC) console.warn("cuda_fake_driver_test: gcc not found, skipping");

Deno.test("CUDA backend host side works against the fake driver (fake libcuda/cuBLASLt)", {
  ignore: !HAS_GCC,
}, () => {
  const tmp = Deno.makeTempDirSync({ prefix: "tune_fakecuda_" });
  try {
    const lib = buildFakeDriver(tmp);
    const r = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${DIR}cuda_fake_driver_run.ts`, lib],
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    const out = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
    assert.equal(r.code, 0, out);
    assert.match(out, /all fake-driver checks passed/);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});
