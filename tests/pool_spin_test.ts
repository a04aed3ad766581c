/**
 * The pool's spinning hand-off (src/backend/cpu/pool_spin.ts) and the shared-memory kernels
 * module the fused decoder's batched attention runs on (shared_module.ts): commands run on the
 * worker and report failure, an ordinary (message) job still gets through after them, and a
 * worker that has gone back to its event loop is woken by the next command.
 */
import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { CpuPool } from "../src/backend/cpu/pool.ts";
import { CMD_ATTN, CMD_GEMM } from "../src/backend/cpu/pool_spin.ts";
import { Gemm, gemmAddresses } from "../src/backend/cpu/gemm.ts";
import { Scratch } from "../src/backend/cpu/scratch.ts";
import { sharedKernelModule, withSharedMemory } from "../src/backend/cpu/shared_module.ts";
import { kernelModule } from "../src/backend/cpu/simd.ts";
import { openBlas } from "../ffi/openblas.ts";

Deno.test({
  name: "withSharedMemory() makes the kernels module import a shared memory, nothing else",
  ignore: kernelModule() === null,
  fn: () => {
    const mod = sharedKernelModule()!;
    deepStrictEqual(WebAssembly.Module.imports(mod), [
      { module: "env", name: "__linear_memory", kind: "memory" },
    ]);
    deepStrictEqual(
      WebAssembly.Module.exports(mod),
      WebAssembly.Module.exports(kernelModule()!),
    );
    const shared = new WebAssembly.Memory({ initial: 2, maximum: 2, shared: true });
    new WebAssembly.Instance(mod, { env: { __linear_memory: shared } });
    throws(
      () =>
        new WebAssembly.Instance(mod, {
          env: { __linear_memory: new WebAssembly.Memory({ initial: 2 }) },
        }),
      WebAssembly.LinkError,
    );
    // a module without a memory import is refused (magic, version, an empty type section)
    throws(
      () => withSharedMemory(Uint8Array.of(0, 97, 115, 109, 1, 0, 0, 0, 1, 1, 0)),
      /no memory/,
    );
  },
});

/** n floats f(i) in shared memory (`map` would return an unshared copy). */
function shared(n: number, f: (i: number) => number): Float32Array {
  const a = new Float32Array(new SharedArrayBuffer(n * 4));
  for (let i = 0; i < n; i++) a[i] = f(i);
  return a;
}

Deno.test({
  name: "the spinning hand-off runs products on the worker, reports a failed command, lets " +
    "a message job through and wakes a worker gone idle",
  ignore: CpuPool.get() === null || openBlas() === null,
  fn: () => {
    const pool = CpuPool.get()!;
    const [M, N, K] = [3, 40, 24];
    const A = shared(M * K, (i) => Math.sin(i)), B = shared(N * K, (i) => Math.cos(i));
    const want = new Float32Array(M * N);
    new Gemm(openBlas(), new Scratch()).ntOneThread(M, N, K, A, K, B, K, want, N, 0);
    const gemm = () => {
      const C = shared(M * N, () => NaN);
      const at = gemmAddresses(M, N, K, A, K, B, K, C, N, 0);
      let local = 0;
      const done = pool.spin((args) => {
        args[0] = CMD_GEMM;
        at.forEach((x, i) => args[1 + i] = Number(x));
      }, () => local++);
      strictEqual(done, true, "the worker ran the product");
      strictEqual(local, 1, "the local share ran once");
      deepStrictEqual(C, want);
    };
    for (let i = 0; i < 3; i++) gemm();
    // an attention command for an arena the worker does not hold fails; the caller knows
    strictEqual(pool.spin((args) => args.set([CMD_ATTN, -1, 0]), () => {}), false);
    gemm();
    // an ordinary job (a message) after commands: the worker leaves its loop to read it
    const g = shared(64, (i) => i / 8 - 4), u = shared(64, () => 2), out = shared(64, () => 0);
    let mine = false;
    ok(pool.run({ kind: "swigluForward", out, gate: g, up: u }, () => mine = true));
    ok(mine, "the local share ran");
    out.forEach((x, i) => {
      const y = 2 * g[i] / (1 + Math.exp(-g[i]));
      ok(Math.abs(x - y) <= 1e-6 * (1 + Math.abs(y)), `swiglu ${i}: ${x} vs ${y}`);
    });
    // idle for longer than the worker spins and sleeps (1 ms + 20 ms): it is back in its
    // event loop, and the next command wakes it with a message
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 80);
    gemm();
  },
});
