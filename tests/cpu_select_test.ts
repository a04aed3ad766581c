/** createBackend() picks the CPU backend, and reports an unusable CUDA request as a TuneError. */
import { createBackend } from "../src/backend/select.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { TuneError } from "../src/errors.ts";
import { ok, rejects } from "node:assert";

/** A GPU driver device node; without one a cuda request must fail cleanly. */
const gpuPresent = (() => {
  try {
    Deno.statSync("/dev/nvidiactl");
    return true;
  } catch {
    return false;
  }
})();

Deno.test("createBackend() returns a CpuBackend when device is cpu", async () => {
  const be = await createBackend("cpu");
  ok(be instanceof CpuBackend);
  ok(be.name === "cpu" && be.computeDtype === "f32");
});

Deno.test("createBackend() throws TuneError when device is unknown", async () => {
  await rejects(createBackend("tpu" as "cpu"), TuneError);
});

Deno.test({
  name: "createBackend() throws TuneError when device is cuda and no GPU is present",
  ignore: gpuPresent,
  fn: async () => {
    await rejects(createBackend("cuda"), TuneError);
  },
});

Deno.test("createBackend() passes collectives to the CPU backend", async () => {
  const collectives = new CpuBackend().collectives;
  const be = await createBackend("cpu", { collectives });
  ok(be.collectives === collectives);
});
