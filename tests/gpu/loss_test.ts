/**
 * GPU checks, cross-entropy and distillation cross-entropy (kernels/layers.cu, distill.cu): the
 * CUDA backend against the CPU backend (the numerical oracle) at the tolerances of _harness.ts.
 * Runs under `deno test` when a GPU answers and from scripts/gpu_check.ts (a GPU session, or the
 * kernel emulator with --small).
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
  randInt,
  randn,
  sz,
  tolFor,
  zeros,
} from "./_harness.ts";

/** The cross-entropy and distillation cross-entropy checks at one dtype. */
export function lossChecks(dt: "f32" | "bf16"): void {
  // V a multiple of 8: the vectorised online-softmax path; V = 300 / 32003: the scalar one;
  for (const V of [sz(32000, 8296), sz(32003, 300)]) { // 8296: two 1024-vector groups
    check(`crossEntropy V=${V} [${dt}]`, () => {
      const N = sz(256, 12);
      const tg = randInt(N, V);
      for (let i = 0; i < N; i += 7) tg[i] = -100;
      const t = pair(tg, "i32"), lg = pair(randn(N * V, 3), dt);
      const ls = zeros(N, "f32"), ls2 = zeros(N, "f32");
      cpu.crossEntropy(ls2.c, null, lg.c, t.c, N, V, 1);
      gpu.crossEntropy(ls2.g, null, lg.g, t.g, N, V, 1);
      const noGrad = cmp("losses (no grad)", ls2, F32_PROD);
      cpu.crossEntropy(ls.c, lg.c, lg.c, t.c, N, V, 1 / 200); // dlogits overwrites logits
      gpu.crossEntropy(ls.g, lg.g, lg.g, t.g, N, V, 1 / 200);
      return [
        noGrad,
        cmp("losses", ls, F32_PROD),
        cmp("dlogits (in place)", lg, tolFor(dt, F32_EW)),
      ];
    });
  }
  check(`distillCrossEntropy V=${sz(32000, 300)} [${dt}]`, () => {
    const N = sz(256, 12), V = sz(32000, 300);
    const tg = randInt(N, V);
    for (let i = 0; i < N; i += 7) tg[i] = -100;
    const t = pair(tg, "i32"), lg = pair(randn(N * V, 3), dt), te = pair(randn(N * V, 3), dt);
    const ls = zeros(N, "f32"), kd = zeros(N, "f32");
    const ls2 = zeros(N, "f32"), kd2 = zeros(N, "f32");
    cpu.distillCrossEntropy(ls2.c, kd2.c, null, lg.c, te.c, t.c, N, V, 0.5, 1);
    gpu.distillCrossEntropy(ls2.g, kd2.g, null, lg.g, te.g, t.g, N, V, 0.5, 1);
    const noGrad = [
      cmp("losses (no grad)", ls2, F32_PROD),
      cmp("KD losses (no grad)", kd2, F32_PROD),
    ];
    // dlogits overwrites the student logits
    cpu.distillCrossEntropy(ls.c, kd.c, lg.c, lg.c, te.c, t.c, N, V, 0.25, 1 / 200);
    gpu.distillCrossEntropy(ls.g, kd.g, lg.g, lg.g, te.g, t.g, N, V, 0.25, 1 / 200);
    return [
      ...noGrad,
      cmp("losses", ls, F32_PROD),
      cmp("KD losses", kd, F32_PROD),
      cmp("dlogits (in place)", lg, tolFor(dt, F32_EW)),
    ];
  });
}

gpuTest("cross-entropy and distillation cross-entropy (kernels/layers.cu, distill.cu)", () => {
  for (const dt of ["f32", "bf16"] as const) lossChecks(dt);
});
