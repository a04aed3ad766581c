/**
 * GPU checks, memory: upload, view, download, fill, copy, casts: each op of the CUDA backend
 * against the CPU backend (the numerical oracle) at the tolerances of _harness.ts. Runs under `deno
 * test` when a GPU is present and from scripts/gpu_check.ts (a GPU session, or the kernel emulator
 * with --small).
 */
import { roundArrayBf16 } from "../../src/backend/cpu/buffer.ts";
import {
  check,
  cmp,
  cmpArrays,
  cpu,
  EXACT,
  gpu,
  gpuTest,
  pair,
  randInt,
  randn,
  sz,
  zeros,
} from "./_harness.ts";

export function memoryChecks(): void {
  check("alloc zero-fills, free reuses", () => {
    const n = sz(1000003, 1003);
    const a = gpu.alloc(n, "f32");
    gpu.upload(a, randn(n));
    gpu.free(a);
    const b = gpu.alloc(n, "f32"); // same size class: the cached block comes back
    const z = gpu.download(b);
    gpu.free(b);
    const c = gpu.alloc(77, "i32");
    const zi = gpu.download(c);
    gpu.free(c);
    return [
      cmpArrays("reused f32", z, new Float32Array(n), EXACT),
      cmpArrays("i32", zi, new Int32Array(77), EXACT),
    ];
  });
  for (const dt of ["f32", "bf16", "i32"] as const) {
    check(`upload/view/download/fill [${dt}]`, () => {
      const n = 4099;
      const host = dt === "i32" ? randInt(n, 1 << 30) : randn(n);
      const p = pair(host, dt);
      const part = dt === "i32" ? randInt(100, 1000) : randn(100);
      if (dt === "bf16") roundArrayBf16(part as Float32Array, part.slice());
      cpu.upload(p.c, part, 1234);
      gpu.upload(p.g, part, 1234);
      const out = [cmp("upload+offset", p, EXACT)];
      const vg = gpu.view(p.g, 17, 200), vc = cpu.view(p.c, 17, 200);
      out.push(cmpArrays("view", gpu.download(vg), cpu.download(vc), EXACT));
      cpu.fill(cpu.view(p.c, 5, 300), dt === "i32" ? -7 : 0.3);
      gpu.fill(gpu.view(p.g, 5, 300), dt === "i32" ? -7 : 0.3);
      out.push(cmp("fill view", p, EXACT));
      return out;
    });
  }
  check("copy f32<->bf16 (round to nearest even)", () => {
    const n = sz(100003, 1003);
    const f = pair(randn(n, 3), "f32");
    const b = zeros(n, "bf16");
    // The CPU copy into a bf16 buffer rounds the same way; its CPU twin here is fp32, so
    // compare against the host-rounded values.
    gpu.copy(b.g, f.g);
    const want = new Float32Array(n);
    roundArrayBf16(want, cpu.download(f.c) as Float32Array);
    const out = [cmpArrays("f32->bf16", gpu.download(b.g), want, EXACT)];
    const back = gpu.alloc(n, "f32");
    gpu.copy(back, b.g);
    out.push(cmpArrays("bf16->f32", gpu.download(back), want, EXACT));
    gpu.free(back);
    const f2 = zeros(n, "f32");
    gpu.copy(f2.g, f.g);
    cpu.copy(f2.c, f.c);
    out.push(cmp("f32->f32", f2, EXACT));
    return out;
  });
}

gpuTest("memory: upload, view, download, fill, copy, casts", memoryChecks);
