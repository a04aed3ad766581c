/**
 * ffi/openblas.ts `parkThreads`: OpenBLAS's worker threads stop (so they do not spin beside
 * the CPU pool's halves), the next threaded product starts them again, and its result is the
 * same as before the park. Runs in a fresh process: the thread count of this test process
 * also holds Deno's and the pool's threads.
 */
import assert from "node:assert/strict";
import { openBlas } from "../ffi/openblas.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const PROBE = `
import { openBlas } from "${ROOT}ffi/openblas.ts";
const blas = openBlas()!;
const tasks = () => [...Deno.readDirSync("/proc/self/task")].length;
const n = 512;
const a = Float32Array.from({ length: n * n }, (_, i) => ((i * 7919) % 1013) / 1013 - 0.5);
const product = () => {
  const c = new Float32Array(n * n);
  blas.setThreads(2);
  blas.sgemm(false, true, n, n, n, 1, a, n, a, n, 0, c, n);
  return c;
};
const before = product();
const running = tasks();
blas.parkThreads();
const parked = tasks();
const after = product();
const again = tasks();
const same = before.every((x, i) => Object.is(x, after[i]));
console.log(JSON.stringify({ running, parked, again, same }));
`;

// Not maxThreads: under `deno test --parallel` another module may have set the process-wide
// count to 1 before this one opened the library. The probe runs with OPENBLAS_NUM_THREADS=2.
const blas = openBlas();
const threaded = blas !== null && !blas.config.includes("SINGLE_THREADED") &&
  Deno.build.os === "linux";

Deno.test({
  name: "parkThreads stops OpenBLAS's workers; the next threaded product restarts them",
  ignore: !threaded,
  fn() {
    const out = new Deno.Command(Deno.execPath(), {
      args: ["eval", PROBE],
      env: { OPENBLAS_NUM_THREADS: "2" },
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    const r = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.equal(r.parked, r.running - 1, "one worker thread (of two) stopped");
    assert.equal(r.again, r.running, "the threaded product started it again");
    assert.ok(r.same, "the same product before and after the park");
  },
});

if (!threaded) {
  console.log(
    "openblas_park_test: ignored (needs a threaded OpenBLAS, on Linux)",
  );
}
