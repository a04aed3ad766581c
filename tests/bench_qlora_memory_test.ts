/**
 * bench/qlora_memory.ts at its tiny shape: on the CPU the NF4 modes report the same first loss
 * (they differ in the optimizer only, which runs after it) and NF4's bytes a weight; with
 * `--device cuda` on the fake driver (no GPU) it reports the device memory rows the GPU
 * session prints (tests/cuda_fake_driver.c runs no kernels, so its losses mean nothing).
 */
import assert from "node:assert/strict";
import { buildFakeDriver, hasGcc } from "./_fake_driver.ts";

const BENCH = new URL("../bench/qlora_memory.ts", import.meta.url).pathname;

function run(mode: string, extra: string[], env: Record<string, string> = {}) {
  const out = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", BENCH, "--tiny", "--mode", mode, ...extra],
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const text = new TextDecoder().decode(out.stdout).trim();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return JSON.parse(text.split("\n").at(-1)!);
}

Deno.test("qlora_memory --tiny on the CPU: NF4 modes share the first loss, 0.52 bytes a base weight", () => {
  const q = run("qlora", []);
  const q8 = run("qlora_adamw8bit_in_bwd", []);
  assert.equal(q.device, "cpu");
  assert.equal(q8.loss, q.loss);
  assert.ok(Number.isFinite(q.loss) && q.loss > 0);
  const perWeight = q.nf4Bytes / q.nf4Weights;
  assert.ok(perWeight > 0.5 && perWeight < 0.53, `NF4 bytes a weight ${perWeight}`);
  assert.ok(q8.optimizerBytes < q.optimizerBytes / 3, "8-bit moments about a quarter of fp32's");
});

Deno.test({
  name:
    "qlora_memory --device cuda --tiny reports device memory (fake driver; ignored without gcc)",
  ignore: !hasGcc(),
  fn() {
    const dir = Deno.makeTempDirSync();
    try {
      const lib = buildFakeDriver(dir);
      const env = { TUNE_LIBCUDA: lib, TUNE_LIBCUBLASLT: lib };
      const lora = run("lora", ["--device", "cuda"], env);
      const q8 = run("qlora_adamw8bit", ["--device", "cuda"], env);
      for (const r of [lora, q8]) {
        assert.equal(r.device, "cuda");
        assert.ok(r.setupDeviceBytes > 0 && r.peakDeviceReservedBytes >= r.setupDeviceBytes);
      }
      // the NF4 base and 8-bit state hold less on the device than the fp32 base and moments
      assert.ok(q8.setupDeviceBytes < lora.setupDeviceBytes);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
