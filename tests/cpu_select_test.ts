/** createBackend() picks the CPU backend, and reports a missing CUDA backend as a TuneError. */
import { createBackend } from "../src/backend/select.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { TuneError } from "../src/errors.ts";
import { ok, rejects } from "node:assert";

const cudaModule = new URL("../src/backend/cuda/backend.ts", import.meta.url);
const cudaPresent = (() => {
  try {
    Deno.statSync(cudaModule);
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
  name: "createBackend() throws TuneError when the CUDA backend module is absent",
  ignore: cudaPresent,
  fn: async () => {
    await rejects(createBackend("cuda"), TuneError);
  },
});
