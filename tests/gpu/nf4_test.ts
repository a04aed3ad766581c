/**
 * GPU checks, NF4 base weights (kernels/nf4.cu): dequantization against the CPU twin bitwise
 * (weights quantized from fp32 and from bf16), and the NF4 products (dequantize + cuBLASLt)
 * at the tolerances of _harness.ts. Runs under `deno test` when a GPU is present and from
 * scripts/gpu_check.ts (a GPU session, or the kernel emulator with --small).
 */
import { roundArrayBf16 } from "../../src/backend/cpu/buffer.ts";
import type { Backend } from "../../src/backend/ops.ts";
import { nf4Quantize } from "../../src/quant/nf4.ts";
import { Nf4Store } from "../../src/quant/nf4_store.ts";
import {
  check,
  cmp,
  cpu,
  EXACT,
  F32_PROD,
  gpu,
  gpuTest,
  pair,
  randn,
  sz,
  tolFor,
  zeros,
} from "./_harness.ts";

function weight(be: Backend, N: number, K: number, host: Float32Array, wdt: "f32" | "bf16") {
  const store = new Nf4Store(be, [{ name: "w", shape: [N, K] }]);
  store.setQuantized("w", nf4Quantize(host, [N, K], { dtype: wdt }));
  return store;
}

/** kernels/nf4.cu against its CPU twin, and the NF4 products in the activations' dtype. */
export function nf4Checks(): void {
  for (const wdt of ["f32", "bf16"] as const) {
    check(`nf4Dequantize [${wdt}-quantized weight]`, () => {
      const N = sz(4096, 64), K = sz(4096, 512);
      const host = randn(N * K, 0.05);
      if (wdt === "bf16") roundArrayBf16(host, host);
      const sc = weight(cpu, N, K, host, wdt), sg = weight(gpu, N, K, host, wdt);
      try {
        const all = zeros(N * K, "f32"), part = zeros(3 * K, "f32");
        cpu.nf4Dequantize(all.c, sc.weight("w"), 0, N);
        gpu.nf4Dequantize(all.g, sg.weight("w"), 0, N);
        cpu.nf4Dequantize(part.c, sc.weight("w"), 5, 3);
        gpu.nf4Dequantize(part.g, sg.weight("w"), 5, 3);
        return [cmp("all rows", all, EXACT), cmp("rows 5..7", part, EXACT)];
      } finally {
        sc.free();
        sg.free();
      }
    });
  }
  for (const dt of ["f32", "bf16"] as const) {
    check(`nf4MatmulForward/Backward [${dt}]`, () => {
      const N = sz(4096, 128), K = sz(4096, 256), M = sz(512, 7);
      const host = randn(N * K, 0.05);
      const sc = weight(cpu, N, K, host, "f32"), sg = weight(gpu, N, K, host, "f32");
      try {
        const x = pair(randn(M * K), dt), b = pair(randn(N), dt), y = zeros(M * N, dt);
        cpu.nf4MatmulForward(y.c, x.c, sc.weight("w"), b.c, M);
        gpu.nf4MatmulForward(y.g, x.g, sg.weight("w"), b.g, M);
        const dy = pair(randn(M * N), dt), dx = pair(randn(M * K), dt);
        cpu.nf4MatmulBackward(dx.c, dy.c, sc.weight("w"), M);
        gpu.nf4MatmulBackward(dx.g, dy.g, sg.weight("w"), M);
        return [
          cmp("out", y, tolFor(dt, F32_PROD)),
          cmp("dinp (accumulated)", dx, tolFor(dt, F32_PROD)),
        ];
      } finally {
        sc.free();
        sg.free();
      }
    });
  }
}

gpuTest("NF4 base weights (kernels/nf4.cu)", nf4Checks);
