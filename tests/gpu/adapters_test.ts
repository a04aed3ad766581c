/**
 * GPU checks, DoRA (kernels/dora.cu): each op of the CUDA backend against the CPU backend (the
 * numerical oracle) at the tolerances of _harness.ts. Runs under `deno test` when a GPU is present
 * and from scripts/gpu_check.ts (a GPU session, or the kernel emulator with --small).
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

/** kernels/dora.cu against the CPU twins (a bf16 frozen base and bf16 activations too). */
export function adapterChecks(): void {
  for (const dt of ["f32", "bf16"] as const) {
    check(`doraNorm [${dt} weight]`, () => {
      const O = sz(4096, 37), I = sz(4096, 300); // rows longer than a block's 256 threads
      const w = pair(randn(O * I), dt), ba = pair(randn(O * I), "f32");
      const mag = pair(randn(O), "f32"), g = zeros(O, "f32"), n = zeros(O, "f32");
      cpu.doraNorm(g.c, n.c, w.c, ba.c, mag.c, 2.5, O, I);
      gpu.doraNorm(g.g, n.g, w.g, ba.g, mag.g, 2.5, O, I);
      return [cmp("norm", n, F32_EW), cmp("scale", g, F32_EW)];
    });
    check(`scaleColumns / doraMagnitudeBackward [${dt}]`, () => {
      const N = sz(4096, 29), C = sz(4096, 301);
      const x = pair(randn(N * C), dt), v = pair(randn(C), "f32"), y = zeros(N * C, dt);
      cpu.scaleColumns(y.c, x.c, v.c, N, C);
      gpu.scaleColumns(y.g, x.g, v.g, N, C);
      const out = [cmp("out of place", y, tolFor(dt, F32_EW))];
      cpu.scaleColumns(x.c, x.c, v.c, N, C);
      gpu.scaleColumns(x.g, x.g, v.g, N, C);
      out.push(cmp("in place", x, tolFor(dt, F32_EW)));
      const dy = pair(randn(N * C), dt), z = pair(randn(N * C), dt);
      const norm = pair(randn(C).map((a) => 1 + Math.abs(a)), "f32"), dm = pair(randn(C), "f32");
      cpu.doraMagnitudeBackward(dm.c, dy.c, z.c, norm.c, N, C);
      gpu.doraMagnitudeBackward(dm.g, dy.g, z.g, norm.g, N, C);
      out.push(cmp("dmagnitude (accumulated)", dm, F32_PROD));
      return out;
    });
  }
}

gpuTest("DoRA (kernels/dora.cu)", adapterChecks);
