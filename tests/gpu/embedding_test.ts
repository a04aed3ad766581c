/**
 * GPU checks, token embedding forward and backward (kernels/elementwise.cu): the CUDA backend
 * against the CPU backend (the numerical oracle) at the tolerances of _harness.ts. Runs under `deno
 * test` when a GPU answers and from scripts/gpu_check.ts (a GPU session, or the kernel emulator
 * with --small).
 */
import {
  check,
  cmp,
  cmpArrays,
  cpu,
  EXACT,
  F32_EW,
  gpu,
  gpuTest,
  pair,
  randInt,
  randn,
  sz,
  tolFor,
  zeros,
} from "./_harness.ts";

/** The token embedding forward and backward checks at one dtype. */
export function embeddingChecks(dt: "f32" | "bf16"): void {
  check(`embedding fwd/bwd [${dt}]`, () => {
    const V = sz(32000, 50), C = sz(1024, 64), N = sz(512, 24);
    const tok = randInt(N, Math.min(V, 200)); // many repeats, so backward collides
    const t = pair(tok, "i32"), table = pair(randn(V * C), dt), o = zeros(N * C, dt);
    cpu.embeddingForward(o.c, t.c, table.c, N, C);
    gpu.embeddingForward(o.g, t.g, table.g, N, C);
    const init = randn(V * C, 0.1);
    const dy = pair(randn(N * C), dt), dtab = pair(init, "f32"), again = pair(init, "f32");
    cpu.embeddingBackward(dtab.c, dy.c, t.c, N, C);
    gpu.embeddingBackward(dtab.g, dy.g, t.g, N, C);
    gpu.embeddingBackward(again.g, dy.g, t.g, N, C);
    return [
      cmp("forward", o, EXACT),
      cmp("dtable(f32)", dtab, tolFor(dt, F32_EW)),
      cmpArrays("backward twice (bitwise)", gpu.download(again.g), gpu.download(dtab.g), EXACT),
    ];
  });
}

gpuTest("token embedding forward and backward (kernels/elementwise.cu)", () => {
  for (const dt of ["f32", "bf16"] as const) embeddingChecks(dt);
});
