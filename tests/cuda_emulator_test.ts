/**
 * The CUDA kernels themselves, without a GPU: kernels/*.cu compile with g++ against a CPU
 * emulation of the CUDA features they use (tests/cuda_emulator.h: threads, barriers, warp
 * shuffles, shared memory, atomics, bf16), linked into the fake driver of
 * tests/cuda_fake_driver.c (which also fakes one-rank NCCL), whose cuLaunchKernel then runs them. scripts/gpu_check.ts
 * --small runs against that library, so every op of the CUDA backend (kernels, launch
 * geometry, argument packing, cuBLASLt mapping) is compared with the CPU backend at the
 * script's stated tolerances (bf16: atol 1e-2 rtol 0.08; fp32: atol 1e-5 rtol 1e-4,
 * products atol 1e-4 rtol 1e-3; copies, casts, masks: bitwise).
 * What this cannot show: GPU-only behaviour (real warp scheduling, memory model, the
 * driver's JIT of the PTX, real cuBLASLt) - that is gpu_check.ts on a GPU.
 */
import assert from "node:assert/strict";
import { buildEmulator as build, hasGpp } from "./_emulator.ts";

const TESTS = new URL("./", import.meta.url).pathname;
const SCRIPT = new URL("../scripts/gpu_check.ts", import.meta.url).pathname;

const HAS_GPP = hasGpp();
if (!HAS_GPP) console.warn("cuda_emulator_test: g++ with C++20 <barrier> not found, skipping");

Deno.test(
  "gpu_check.ts --small and tests/gpu/*_test.ts pass with the kernels emulated on the CPU",
  {
    ignore: !HAS_GPP,
  },
  () => {
    const dir = Deno.makeTempDirSync({ prefix: "tune_emucuda_" });
    try {
      const lib = build(dir);
      const r = new Deno.Command(Deno.execPath(), {
        // The model sections also pass here but take minutes on a small CPU; run them by hand:
        // TUNE_LIBCUDA=lib TUNE_LIBCUBLASLT=lib deno run -A scripts/gpu_check.ts --small
        args: ["run", "-A", SCRIPT, "--small", "--no-model"],
        env: { TUNE_LIBCUDA: lib, TUNE_LIBCUBLASLT: lib, TUNE_LIBNCCL: lib },
        stdout: "piped",
        stderr: "piped",
      }).outputSync();
      const out = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
      console.log(out.split("\n").filter((l) => /^(FAIL|\d+\/\d+ checks)/.test(l)).join("\n"));
      assert.equal(r.code, 0, out);
      assert.ok(!out.includes("FAIL"), out);
      // The same checks as `deno test` files: with the emulator as the driver a GPU answers, so
      // they run (not ignored); two small families show the test wiring.
      const t = new Deno.Command(Deno.execPath(), {
        args: ["test", "-A", `${TESTS}gpu/memory_test.ts`, `${TESTS}gpu/optimizer_test.ts`],
        env: {
          TUNE_LIBCUDA: lib,
          TUNE_LIBCUBLASLT: lib,
          TUNE_LIBNCCL: lib,
          TUNE_GPU_SMALL: "1",
          NO_COLOR: "1",
        },
        stdout: "piped",
        stderr: "piped",
      }).outputSync();
      const tout = new TextDecoder().decode(t.stdout) + new TextDecoder().decode(t.stderr);
      assert.equal(t.code, 0, tout);
      assert.match(tout, /ok \| 2 passed \| 0 failed/, tout);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
);
