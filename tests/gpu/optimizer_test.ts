/**
 * GPU checks, the fused AdamW step (kernels/elementwise.cu: adamw): the CUDA backend against the
 * CPU backend (the numerical oracle) at the tolerances of _harness.ts. Runs under `deno test` when
 * a GPU answers and from scripts/gpu_check.ts.
 */
import { check, cmp, cpu, F32_EW, gpu, gpuTest, pair, randn, sz, uniform } from "./_harness.ts";

/** The fused AdamW step (f32 parameters and state; f32 and bf16 gradients). */
export function optimizerChecks(): void {
  for (const gdt of ["f32", "bf16"] as const) {
    check(`adamw (f32 params/state, ${gdt} grads)`, () => {
      const n = sz(1_000_003, 3001);
      const p = pair(randn(n), "f32"), g = pair(randn(n, 0.1), gdt);
      const m = pair(randn(n, 0.01), "f32"),
        v = pair(new Float32Array(n).map(() => uniform() * 1e-3), "f32");
      for (let step = 1; step <= 3; step++) {
        const hp = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step };
        cpu.adamw(p.c, g.c, m.c, v.c, hp);
        gpu.adamw(p.g, g.g, m.g, v.g, hp);
      }
      return [cmp("params", p, F32_EW), cmp("m", m, F32_EW), cmp("v", v, F32_EW)];
    });
  }
}

gpuTest("the fused AdamW step (kernels/elementwise.cu)", optimizerChecks);
