/**
 * ffi/openblas.ts sets OPENBLAS_THREAD_TIMEOUT=20 before OpenBLAS loads when it is unset, so
 * after a threaded product the idle worker sleeps within a millisecond instead of spinning for
 * 2^28 cycles beside the CPU pool's two halves; an explicit value is kept. Each case opens the
 * library in a fresh process (OpenBLAS reads the variable once, at load).
 */
import assert from "node:assert/strict";
import { openBlas, THREAD_TIMEOUT } from "../ffi/openblas.ts";
import { openBlasProbe } from "./_openblas_probe.ts";

const ROOT = new URL("../", import.meta.url).pathname;
// One threaded product, then the states of the process's unnamed threads other than the main
// one (OpenBLAS's worker; Deno's own are named) at 30, 40 and 50 ms: S once it sleeps, R while
// it spins.
const PROBE = `
import { openBlas } from "${ROOT}ffi/openblas.ts";
const blas = openBlas()!;
const n = 512;
const a = new Float32Array(n * n).fill(0.5), c = new Float32Array(n * n);
blas.setThreads(2);
blas.sgemm(false, true, n, n, n, 1, a, n, a, n, 0, c, n);
const workerStates = () => [...Deno.readDirSync("/proc/self/task")].flatMap((d) => {
  const stat = Deno.readTextFileSync("/proc/self/task/" + d.name + "/stat");
  const close = stat.lastIndexOf(")");
  const comm = stat.slice(stat.indexOf("(") + 1, close);
  return Number(d.name) !== Deno.pid && comm === "deno" ? [stat[close + 2]] : [];
});
const states = [];
for (const ms of [30, 10, 10]) {
  await new Promise((r) => setTimeout(r, ms));
  states.push(...workerStates());
}
console.log(JSON.stringify({ timeout: Deno.env.get("OPENBLAS_THREAD_TIMEOUT") ?? null, states }));
`;

function probe(timeout: string | null): { timeout: string | null; states: string[] } {
  const set = { OPENBLAS_NUM_THREADS: "2", GOTO_THREAD_TIMEOUT: null };
  return JSON.parse(openBlasProbe(PROBE, { ...set, OPENBLAS_THREAD_TIMEOUT: timeout }));
}

const blas = openBlas();
const threaded = blas !== null && !blas.config.includes("SINGLE_THREADED") &&
  Deno.build.os === "linux";

Deno.test({
  name: "OPENBLAS_THREAD_TIMEOUT: 20 when unset (the idle worker stops spinning), kept when set",
  ignore: !threaded,
  fn() {
    const hinted = probe(null);
    assert.equal(hinted.timeout, THREAD_TIMEOUT);
    assert.ok(hinted.states.length > 0, "OpenBLAS started a worker thread");
    assert.ok(hinted.states.every((x) => x === "S"), `worker states ${hinted.states}`);
    // the default's 2^28 cycles (~0.1 s): still spinning (runnable) at 30-50 ms
    const spinning = probe("28");
    assert.equal(spinning.timeout, "28");
    assert.ok(spinning.states.includes("R"), `worker states ${spinning.states}`);
  },
});

if (!threaded) {
  console.log("openblas_thread_timeout_test: ignored (needs a threaded OpenBLAS, on Linux)");
}
