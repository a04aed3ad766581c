/**
 * The CPU backend's matrix products on both paths (OpenBLAS and TypeScript) against a
 * float64 naive product, at sizes that cross the TypeScript kernel's 4x4 register blocks
 * and (KC=512, NC=64) cache blocks. Tolerance: fp32 forward atol 1e-5 rtol 1e-4 on
 * values scaled to O(1) (inputs in [-1, 1) divided by sqrt(K)).
 */
import { assertClose } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { openBlas } from "../ffi/openblas.ts";
import { Gemm } from "../src/backend/cpu/gemm.ts";
import { Scratch } from "../src/backend/cpu/scratch.ts";
import { ok } from "node:assert";
import { lcgFloats } from "./_lcg.ts";

const FWD = { atol: 1e-5, rtol: 1e-4 };

/** C(M, N) = A(M, K) @ B(N, K)^T in float64. */
function naiveNT(A: Float32Array, B: Float32Array, M: number, K: number, N: number) {
  const C = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += A[i * K + k] * B[j * K + k];
      C[i * N + j] = s;
    }
  }
  return C;
}
/** (cols, rows) transpose of x(rows, cols). */
function tr(x: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = x[r * cols + c];
  return out;
}

for (const path of ["ts", "blas"] as const) {
  Deno.test(`matmulForward()/matmulBackward() match a float64 product on the ${path} path`, () => {
    const be = new CpuBackend({ matmul: path });
    if (path === "blas") ok(openBlas() !== null && be.matmulPath === "blas", "OpenBLAS loads");
    for (const [M, K, N] of [[1, 7, 5], [9, 520, 70], [13, 257, 66], [4, 64, 4]]) {
      const x = lcgFloats(M * K, M + K, 1 / Math.sqrt(K)), w = lcgFloats(N * K, N * 3 + 1, 1);
      const dy = lcgFloats(M * N, 5 + M, 1 / Math.sqrt(Math.max(M, N)));
      const bx = be.alloc(M * K), bw = be.alloc(N * K), bdy = be.alloc(M * N);
      be.upload(bx, x);
      be.upload(bw, w);
      be.upload(bdy, dy);
      const out = be.alloc(M * N);
      be.fill(out, NaN); // overwritten: a stale NaN in a reused buffer must not survive
      be.matmulForward(out, bx, bw, null, M, K, N);
      assertClose(`out ${M}x${K}x${N}`, be.download(out), naiveNT(x, w, M, K, N), FWD);
      const dx = be.alloc(M * K), dw = be.alloc(N * K);
      be.matmulBackward(dx, dw, null, bdy, bx, bw, M, K, N);
      // dinp = dout @ W = dout(M, N) . (W^T)(K, N)^T; dweight = dout^T @ inp.
      assertClose(`dinp ${M}x${K}x${N}`, be.download(dx), naiveNT(dy, tr(w, N, K), M, N, K), FWD);
      assertClose(
        `dweight ${M}x${K}x${N}`,
        be.download(dw),
        naiveNT(tr(dy, M, N), tr(x, M, K), N, M, K),
        FWD,
      );
    }
  });
}

Deno.test({
  name: "openBlas().sgemm()/sgemv() honour the byteOffset of Float32Array views",
  ignore: openBlas() === null,
  fn: () => {
    const blas = openBlas()!;
    // A(2, 3) at offset 5, B(4, 3) at offset 7, C(2, 4) at offset 3 of larger arrays.
    const a = lcgFloats(5 + 6, 11, 1),
      b = lcgFloats(7 + 12, 12, 1),
      c = new Float32Array(3 + 8).fill(9);
    blas.sgemm(false, true, 2, 4, 3, 1, a.subarray(5), 3, b.subarray(7), 3, 0, c.subarray(3), 4);
    assertClose(
      "sgemm on views",
      c.subarray(3),
      naiveNT(a.subarray(5), b.subarray(7), 2, 3, 4),
      FWD,
    );
    assertClose("sgemm leaves the prefix", c.subarray(0, 3), [9, 9, 9], FWD);
    const y = new Float32Array(2 + 4).fill(1);
    blas.sgemv(false, 4, 3, 1, b.subarray(7), 3, a.subarray(5), 1, y.subarray(2));
    const want = Array.from(naiveNT(a.subarray(5), b.subarray(7), 1, 3, 4), (x) => x + 1);
    assertClose("sgemv on views (beta 1)", y.subarray(2), want, FWD);
  },
});

Deno.test({
  name: "few-row products against a large weight run as the same two column halves with the " +
    "pool's worker, without it and from a wasm memory, close to a float64 product",
  ignore: openBlas() === null,
  fn: () => {
    // N * K >= 2^21 and M <= 8: gemm.ts splits it at column 2048 (N / 2 rounded down to 16).
    const [M, K, N] = [3, 520, 4100];
    const x = lcgFloats(M * K, 3, 1 / Math.sqrt(K)), w = lcgFloats(N * K, 4, 1);
    const be = new CpuBackend({ matmul: "blas" });
    const bx = be.alloc(M * K), bw = be.alloc(N * K), out = be.alloc(M * N);
    be.upload(bx, x);
    be.upload(bw, w);
    be.fill(out, NaN);
    be.matmulForward(out, bx, bw, null, M, K, N);
    const got = be.download(out) as Float32Array;
    assertClose("split product", got, naiveNT(x, w, M, K, N), FWD);
    // the halves one after the other on this thread
    const alone = new Gemm(openBlas(), new Scratch());
    const halves = new Float32Array(M * N);
    alone.ntOneThread(M, 2048, K, x, K, w, K, halves, N, 0);
    alone.ntOneThread(M, N - 2048, K, x, K, w.subarray(2048 * K), K, halves.subarray(2048), N, 0);
    const seq = new Float32Array(M * N).fill(NaN);
    alone.nt(M, N, K, x, K, w, K, seq, N, 0);
    // the input in a (non-shared) wasm memory: the worker reads it by address
    const mem = new WebAssembly.Memory({ initial: 1 });
    const xw = new Float32Array(mem.buffer, 64, M * K);
    xw.set(x);
    const fromWasm = new Float32Array(new SharedArrayBuffer(M * N * 4));
    const g = (be as unknown as { gemm: Gemm }).gemm;
    g.nt(M, N, K, xw, K, (bw as unknown as { data: Float32Array }).data, K, fromWasm, N, 0);
    for (const [name, a] of [["no pool", seq], ["wasm input", fromWasm], ["pool", got]] as const) {
      let differ = 0;
      for (let i = 0; i < M * N; i++) if (!Object.is(a[i], halves[i])) differ++;
      ok(differ === 0, `${name}: ${differ} of ${M * N} outputs differ from the two halves`);
    }
  },
});

/** Run `code` in a fresh Deno with extra environment; returns its stdout. */
async function denoEval(code: string, env: Record<string, string>): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", code],
    env,
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return new TextDecoder().decode(out.stdout).trim();
}

Deno.test("openBlas() throws TuneError when TUNE_OPENBLAS_PATH does not load", async () => {
  const code = `import { openBlas } from "./ffi/openblas.ts";
try { openBlas(); console.log("opened"); } catch (e) { console.log(e.name); }`;
  const got = await denoEval(code, { TUNE_OPENBLAS_PATH: "/nonexistent/libopenblas.so" });
  ok(got === "TuneError", `got ${got}`);
});
