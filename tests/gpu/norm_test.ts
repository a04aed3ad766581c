/**
 * GPU checks, RMSNorm forward and backward (kernels/layers.cu): the CUDA backend against the CPU
 * backend (the numerical oracle) at the tolerances of _harness.ts. Runs under `deno test` when a
 * GPU answers and from scripts/gpu_check.ts (a GPU session, or the kernel emulator with --small).
 */
import {
  check,
  cmp,
  cpu,
  F32_EW,
  F32_PROD,
  gpu,
  gpuTest,
  pair,
  randn,
  sz,
  tolFor,
  zeros,
} from "./_harness.ts";

/** The RMSNorm forward and backward checks at one dtype. */
export function normChecks(dt: "f32" | "bf16"): void {
  // C = 36: not a multiple of 8, so the kernels' scalar path (the others vectorise);
  // 1024, 4104, 8200: 2, 3 and 5 8-column vectors per thread of the block-per-row kernels
  const shapes = [
    [sz(512, 9), sz(1024, 96)],
    [67, 64],
    [5, 36],
    [3, 1024],
    [2, 4104],
    [2, 8200],
  ];
  for (const [N, C] of shapes) {
    check(`rmsnorm fwd/bwd N=${N} C=${C} [${dt}]`, () => {
      const x = pair(randn(N * C, 2), dt), w = pair(randn(C, 0.5), dt);
      const o = zeros(N * C, dt), r = zeros(N, "f32");
      cpu.rmsnormForward(o.c, r.c, x.c, w.c, N, C, 1e-5);
      gpu.rmsnormForward(o.g, r.g, x.g, w.g, N, C, 1e-5);
      const dy = pair(randn(N * C), dt), dx = pair(randn(N * C), dt);
      const dw = pair(randn(C), "f32");
      cpu.rmsnormBackward(dx.c, dw.c, dy.c, x.c, w.c, r.c, N, C);
      gpu.rmsnormBackward(dx.g, dw.g, dy.g, x.g, w.g, r.g, N, C);
      return [
        cmp("out", o, tolFor(dt, F32_EW)),
        cmp("rstd", r, F32_EW),
        cmp("dinp", dx, tolFor(dt, F32_PROD)),
        cmp("dweight(f32)", dw, tolFor(dt, F32_PROD)),
      ];
    });
  }
}

gpuTest("RMSNorm forward and backward (kernels/layers.cu)", () => {
  for (const dt of ["f32", "bf16"] as const) normChecks(dt);
});
