/**
 * GPU checks, matrix products (cuBLASLt): each op of the CUDA backend against the CPU backend (the
 * numerical oracle) at the tolerances of _harness.ts. Runs under `deno test` when a GPU is present
 * and from scripts/gpu_check.ts (a GPU session, or the kernel emulator with --small).
 */
import { createCudaBackend } from "../../src/backend/cuda/backend.ts";
import {
  BF16,
  check,
  cmp,
  cmpArrays,
  cpu,
  F32_PROD,
  gpu,
  gpuTest,
  type Outcome,
  type Pair,
  pair,
  randn,
  selfTest,
  sz,
  tolFor,
  zeros,
} from "./_harness.ts";

export function matmulChecks(): void {
  const shapes: [number, number, number][] = [
    [sz(512, 24), sz(1024, 40), sz(2816, 56)], // (B*T, C) x (H, C)^T
    [1, sz(1024, 64), sz(1024, 48)], // decode row
    [37, 100, 75], // odd sizes, unaligned leading dimensions
  ];
  for (const dt of ["f32", "bf16"] as const) {
    for (const [M, K, N] of shapes) {
      check(`matmulForward ${M}x${K}x${N} [${dt}]`, () => {
        const x = pair(randn(M * K), dt), w = pair(randn(N * K, 1 / Math.sqrt(K)), dt);
        const bias = pair(randn(N), dt), o = pair(randn(M * N), dt);
        const tol = tolFor(dt, F32_PROD);
        const out: Outcome[] = [];
        cpu.matmulForward(o.c, x.c, w.c, null, M, K, N);
        gpu.matmulForward(o.g, x.g, w.g, null, M, K, N);
        out.push(cmp("plain", o, tol));
        cpu.matmulForward(o.c, x.c, w.c, bias.c, M, K, N, true);
        gpu.matmulForward(o.g, x.g, w.g, bias.g, M, K, N, true);
        out.push(cmp("bias+accumulate", o, tol));
        return out;
      });
      check(`matmulBackward ${M}x${K}x${N} [${dt}]`, () => {
        const x = pair(randn(M * K), dt), w = pair(randn(N * K, 1 / Math.sqrt(K)), dt);
        const dy = pair(randn(M * N), dt);
        const dx = pair(randn(M * K), dt),
          dw = pair(randn(N * K), "f32"),
          db = pair(randn(N), "f32");
        cpu.matmulBackward(dx.c, dw.c, db.c, dy.c, x.c, w.c, M, K, N);
        gpu.matmulBackward(dx.g, dw.g, db.g, dy.g, x.g, w.g, M, K, N);
        const tol = tolFor(dt, F32_PROD);
        // dweight/dbias are fp32 accumulators; with bf16 operands the products still carry
        // bf16 input error only, which the bf16 tolerance covers.
        return [cmp("dinp", dx, tol), cmp("dweight(f32)", dw, tol), cmp("dbias(f32)", db, tol)];
      });
    }
  }
  check("matmulForward on unaligned views [bf16]", () => {
    const M = 64, K = 256, N = 128;
    const x = pair(randn(M * K + 3), "bf16"), w = pair(randn(N * K + 5, 0.06), "bf16");
    const o = pair(randn(M * N + 1), "bf16");
    const v = (p: Pair, off: number, n: number) => ({
      c: cpu.view(p.c, off, n),
      g: gpu.view(p.g, off, n),
      dt: p.dt,
    });
    const xv = v(x, 3, M * K), wv = v(w, 5, N * K), ov = v(o, 1, M * N);
    cpu.matmulForward(ov.c, xv.c, wv.c, null, M, K, N);
    gpu.matmulForward(ov.g, xv.g, wv.g, null, M, K, N);
    return [cmp("out", ov, BF16)];
  });
  if (!selfTest) {
    check("matmulForward f32 on TF32 tensor cores (opt-in)", () => {
      const M = sz(512, 16), K = sz(1024, 48), N = sz(2816, 40);
      const be = createCudaBackend({ tf32: true });
      const x = randn(M * K), w = randn(N * K, 1 / Math.sqrt(K));
      const xg = be.alloc(M * K), wg = be.alloc(N * K), og = be.alloc(M * N);
      be.upload(xg, x);
      be.upload(wg, w);
      be.matmulForward(og, xg, wg, null, M, K, N);
      const got = be.download(og);
      const o = zeros(M * N, "f32"), xc = pair(x, "f32"), wc = pair(w, "f32");
      cpu.matmulForward(o.c, xc.c, wc.c, null, M, K, N);
      be.destroy();
      // TF32 keeps 10 mantissa bits of each operand: about 1e-3 relative per product.
      return [cmpArrays("out", got, cpu.download(o.c), { atol: 1e-2, rtol: 1e-2 })];
    });
  }
  check("matmul mixed dtypes (bf16 x f32 -> f32)", () => {
    const M = sz(128, 8), K = sz(512, 40), N = sz(256, 24);
    const x = pair(randn(M * K), "bf16"), w = pair(randn(N * K, 0.05), "f32");
    const o = pair(randn(M * N), "f32");
    cpu.matmulForward(o.c, x.c, w.c, null, M, K, N);
    gpu.matmulForward(o.g, x.g, w.g, null, M, K, N);
    return [cmp("out", o, BF16)];
  });
  for (const dt of ["f32", "bf16"] as const) {
    check(`matmulBatched (strided batch) [${dt}]`, () => {
      const batch = 6, M = 64, K = 96, N = 80;
      const x = pair(randn(batch * M * K), dt), w = pair(randn(batch * N * K, 0.1), dt);
      const o = pair(new Float32Array(batch * M * N), dt);
      for (let b = 0; b < batch; b++) {
        cpu.matmulForward(
          cpu.view(o.c, b * M * N, M * N),
          cpu.view(x.c, b * M * K, M * K),
          cpu.view(w.c, b * N * K, N * K),
          null,
          M,
          K,
          N,
        );
      }
      gpu.matmulBatched(o.g, x.g, w.g, batch, M, K, N);
      return [cmp("out", o, tolFor(dt, F32_PROD))];
    });
  }
}

gpuTest("matrix products (cuBLASLt)", matmulChecks);
