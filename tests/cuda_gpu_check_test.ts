/**
 * scripts/gpu_check.ts is run once on a GPU machine, with little time to spare: this test
 * runs its harness (input pairing, bf16 rounding of the oracle, comparisons, the model
 * sections) end to end against the CPU stand-in of `--self-test`, so a broken script is
 * found here rather than on the GPU. Against the stand-in every selected check must pass.
 */
import assert from "node:assert/strict";

const SCRIPT = new URL("../scripts/gpu_check.ts", import.meta.url).pathname;

Deno.test("gpu_check.ts --self-test passes its selected checks on the CPU stand-in", () => {
  const r = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      SCRIPT,
      "--self-test",
      "--only=upload,copy,kvCache,rope half HS=16,attention decode,aidreams260K greedy",
    ],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const out = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 0, out);
  const passed = out.split("\n").filter((l) => l.startsWith("PASS")).length;
  assert.ok(passed >= 10, `only ${passed} checks ran:\n${out}`);
  assert.ok(!out.includes("FAIL"), out);
  assert.match(out, /aidreams260K greedy generation vs reference ids: 81\/81/);
});
