/**
 * GPU checks, RoPE, both layouts and packed positions (kernels/layers.cu): the CUDA backend against
 * the CPU backend (the numerical oracle) at the tolerances of _harness.ts. Runs under `deno test`
 * when a GPU answers and from scripts/gpu_check.ts (a GPU session, or the kernel emulator with
 * --small).
 */
import type { RopeLayout } from "../../src/backend/ops.ts";
import {
  check,
  cmp,
  cmpArrays,
  cpu,
  F32_EW,
  gpu,
  gpuTest,
  packedIds,
  pair,
  randn,
  sz,
  tolFor,
} from "./_harness.ts";

/** The RoPE, both layouts and packed positions checks at one dtype. */
export function ropeChecks(dt: "f32" | "bf16"): void {
  for (const layout of ["interleaved", "half"] as RopeLayout[]) {
    for (const HS of [64, 16, 12]) { // 12: HS/2 = 6, the scalar path
      check(`rope ${layout} HS=${HS} (+inverse) [${dt}]`, () => {
        const B = 2, T = sz(128, 6), NH = sz(16, 3), pos = 5, Tmax = 256, half = HS / 2;
        const cosH = new Float32Array(Tmax * half), sinH = new Float32Array(Tmax * half);
        for (let p = 0; p < Tmax; p++) {
          for (let i = 0; i < half; i++) {
            const a = p / Math.pow(10000, (2 * i) / HS);
            cosH[p * half + i] = Math.cos(a);
            sinH[p * half + i] = Math.sin(a);
          }
        }
        const cs = pair(cosH, "f32"), sn = pair(sinH, "f32");
        const x = pair(randn(B * T * NH * HS), dt);
        const orig = gpu.download(x.g);
        cpu.rope(x.c, cs.c, sn.c, B, T, NH, HS, pos, layout, false);
        gpu.rope(x.g, cs.g, sn.g, B, T, NH, HS, pos, layout, false);
        const fwd = cmp("forward", x, tolFor(dt, F32_EW));
        cpu.rope(x.c, cs.c, sn.c, B, T, NH, HS, pos, layout, true);
        gpu.rope(x.g, cs.g, sn.g, B, T, NH, HS, pos, layout, true);
        return [
          fwd,
          cmp("inverse", x, tolFor(dt, F32_EW)),
          cmpArrays("roundtrip", gpu.download(x.g), orig, tolFor(dt, F32_EW)),
        ];
      });
    }
    check(`rope ${layout} partial rotary 12 of HS=16, packed positions (+inverse) [${dt}]`, () => {
      const B = 2, T = sz(128, 10), NH = 3, HS = 16, RD = 12, half = RD / 2, Tmax = T + 1;
      const cosH = new Float32Array(Tmax * half), sinH = new Float32Array(Tmax * half);
      for (let p = 0; p < Tmax; p++) {
        for (let i = 0; i < half; i++) {
          const a = p / Math.pow(10000, (2 * i) / RD);
          cosH[p * half + i] = Math.cos(a);
          sinH[p * half + i] = Math.sin(a);
        }
      }
      const cs = pair(cosH, "f32"), sn = pair(sinH, "f32");
      const x = pair(randn(B * T * NH * HS), dt);
      const posH = Int32Array.from({ length: B * T }, (_, i) => (i * 3) % T);
      const pos = pair(posH, "i32");
      cpu.rope(x.c, cs.c, sn.c, B, T, NH, HS, 1, layout, false, null, RD);
      gpu.rope(x.g, cs.g, sn.g, B, T, NH, HS, 1, layout, false, null, RD);
      const fwd = cmp("forward", x, tolFor(dt, F32_EW));
      cpu.rope(x.c, cs.c, sn.c, B, T, NH, HS, 0, layout, true, pos.c, RD);
      gpu.rope(x.g, cs.g, sn.g, B, T, NH, HS, 0, layout, true, pos.g, RD);
      return [fwd, cmp("inverse at positions", x, tolFor(dt, F32_EW))];
    });
    check(`rope ${layout} at packed positions (+inverse) [${dt}]`, () => {
      const B = 2, T = sz(128, 40), NH = 3, HS = 16, half = HS / 2;
      const cosH = new Float32Array(T * half), sinH = new Float32Array(T * half);
      for (let p = 0; p < T; p++) {
        for (let i = 0; i < half; i++) {
          const a = p / Math.pow(10000, (2 * i) / HS);
          cosH[p * half + i] = Math.cos(a);
          sinH[p * half + i] = Math.sin(a);
        }
      }
      const cs = pair(cosH, "f32"), sn = pair(sinH, "f32");
      const pos = pair(packedIds(B, T).positions, "i32");
      const x = pair(randn(B * T * NH * HS), dt);
      cpu.rope(x.c, cs.c, sn.c, B, T, NH, HS, 0, layout, false, pos.c);
      gpu.rope(x.g, cs.g, sn.g, B, T, NH, HS, 0, layout, false, pos.g);
      const fwd = cmp("forward", x, tolFor(dt, F32_EW));
      cpu.rope(x.c, cs.c, sn.c, B, T, NH, HS, 0, layout, true, pos.c);
      gpu.rope(x.g, cs.g, sn.g, B, T, NH, HS, 0, layout, true, pos.g);
      return [fwd, cmp("inverse", x, tolFor(dt, F32_EW))];
    });
  }
}

gpuTest("RoPE, both layouts and packed positions (kernels/layers.cu)", () => {
  for (const dt of ["f32", "bf16"] as const) ropeChecks(dt);
});
