/**
 * GPU checks, SwiGLU and GeGLU (kernels/layers.cu, geglu.cu): the CUDA backend against the CPU
 * backend (the numerical oracle) at the tolerances of _harness.ts. Runs under `deno test` when a
 * GPU answers and from scripts/gpu_check.ts (a GPU session, or the kernel emulator with --small).
 */
import {
  check,
  cmp,
  cpu,
  F32_EW,
  gpu,
  gpuTest,
  pair,
  randn,
  sz,
  tolFor,
  zeros,
} from "./_harness.ts";

/** The SwiGLU and GeGLU checks at one dtype. */
export function activationChecks(dt: "f32" | "bf16"): void {
  check(`swiglu fwd/bwd [${dt}]`, () => {
    const n = sz(512 * 2816 + 3, 3003); // 8-element vectors and a ragged tail
    const g = pair(randn(n, 2), dt), u = pair(randn(n), dt), o = zeros(n, dt);
    cpu.swigluForward(o.c, g.c, u.c, n);
    gpu.swigluForward(o.g, g.g, u.g, n);
    const fwd = cmp("forward", o, tolFor(dt, F32_EW));
    const dy = pair(randn(n), dt);
    // dgate/dup alias gate/up, as the model uses them.
    cpu.swigluBackward(g.c, u.c, dy.c, g.c, u.c, n);
    gpu.swigluBackward(g.g, u.g, dy.g, g.g, u.g, n);
    return [
      fwd,
      cmp("dgate (in place)", g, tolFor(dt, F32_EW)),
      cmp("dup (in place)", u, tolFor(dt, F32_EW)),
    ];
  });
  check(`geglu fwd/bwd [${dt}]`, () => {
    const n = sz(512 * 2816 + 3, 3003); // 8-element vectors and a ragged tail
    const g = pair(randn(n, 2), dt), u = pair(randn(n), dt), o = zeros(n, dt);
    cpu.gegluForward(o.c, g.c, u.c, n);
    gpu.gegluForward(o.g, g.g, u.g, n);
    const fwd = cmp("forward", o, tolFor(dt, F32_EW));
    const dy = pair(randn(n), dt);
    // dgate/dup alias gate/up, as the model uses them.
    cpu.gegluBackward(g.c, u.c, dy.c, g.c, u.c, n);
    gpu.gegluBackward(g.g, u.g, dy.g, g.g, u.g, n);
    return [
      fwd,
      cmp("dgate (in place)", g, tolFor(dt, F32_EW)),
      cmp("dup (in place)", u, tolFor(dt, F32_EW)),
    ];
  });
}

gpuTest("SwiGLU and GeGLU (kernels/layers.cu, geglu.cu)", () => {
  for (const dt of ["f32", "bf16"] as const) activationChecks(dt);
});
