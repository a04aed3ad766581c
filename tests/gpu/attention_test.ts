/**
 * GPU checks, attention: general, tiled and flash kernels (kernels/attention.cu,
 * flash_attention.cu): each op of the CUDA backend against the CPU backend (the numerical oracle)
 * at the tolerances of _harness.ts. Runs under `deno test` when a GPU is present and from
 * scripts/gpu_check.ts (a GPU session, or the kernel emulator with --small).
 */
import { roundArrayBf16 } from "../../src/backend/cpu/buffer.ts";
import { createCudaBackend, type CudaBackend } from "../../src/backend/cuda/backend.ts";
import type { DeviceBuffer, DType } from "../../src/backend/ops.ts";
import {
  BF16,
  check,
  cmp,
  cmpArrays,
  cpu,
  EXACT,
  F32_PROD,
  FLASH_GRAD,
  gpu,
  gpuTest,
  type Outcome,
  packedIds,
  pair,
  randn,
  selected,
  selfTest,
  SMALL,
  sz,
  tolFor,
  zeros,
} from "./_harness.ts";

export function attentionChecks(): void {
  const train: [number, number, number, number, number][] = SMALL
    ? [[2, 9, 4, 2, 16], [1, 33, 2, 2, 16], [1, 5, 2, 1, 128], [1, 4, 2, 2, 256], [1, 70, 2, 1, 64]]
    : [
      // B, T, NH, NKV, HS
      [2, 256, 16, 4, 64],
      [3, 33, 4, 4, 16], // aidreams260K's head size, ragged T
      [1, 100, 8, 1, 128], // multi-query
      [1, 64, 4, 2, 256], // largest supported head size
    ];
  for (const dt of ["f32", "bf16"] as const) {
    for (const [B, T, NH, NKV, HS] of train) {
      const tag = `B=${B} T=${T} NH=${NH} NKV=${NKV} HS=${HS}`;
      check(`attention fwd+bwd ${tag} [${dt}]`, () => {
        const q = pair(randn(B * T * NH * HS), dt), k = pair(randn(B * T * NKV * HS), dt);
        const v = pair(randn(B * T * NKV * HS), dt);
        const o = zeros(B * T * NH * HS, dt), lse = zeros(B * NH * T, "f32");
        cpu.attentionForward(o.c, lse.c, q.c, k.c, v.c, B, T, T, T, NH, NKV, HS);
        gpu.attentionForward(o.g, lse.g, q.g, k.g, v.g, B, T, T, T, NH, NKV, HS);
        const dy = pair(randn(B * T * NH * HS), dt);
        const dq = zeros(B * T * NH * HS, dt), dk = zeros(B * T * NKV * HS, dt);
        const dv = zeros(B * T * NKV * HS, dt);
        // Both backward passes read the GPU's own forward outputs, so the gradients are
        // compared on identical inputs.
        const oHost = gpu.download(o.g) as Float32Array,
          lHost = gpu.download(lse.g) as Float32Array;
        const out = [cmp("out", o, tolFor(dt, F32_PROD)), cmp("lse", lse, F32_PROD)];
        cpu.upload(o.c, oHost);
        cpu.upload(lse.c, lHost);
        cpu.attentionBackward(dq.c, dk.c, dv.c, dy.c, q.c, k.c, v.c, o.c, lse.c, B, T, NH, NKV, HS);
        gpu.attentionBackward(dq.g, dk.g, dv.g, dy.g, q.g, k.g, v.g, o.g, lse.g, B, T, NH, NKV, HS);
        out.push(cmp("dq", dq, tolFor(dt, F32_PROD)), cmp("dk", dk, tolFor(dt, F32_PROD)));
        out.push(cmp("dv", dv, tolFor(dt, F32_PROD)));
        return out;
      });
    }
    // Packed samples: block-causal by segment ids, forward and backward.
    const [pB, pT, pNH, pNKV, pHS] = SMALL ? [2, 90, 2, 1, 16] : [2, 256, 8, 2, 64];
    check(`attention fwd+bwd packed segments B=${pB} T=${pT} [${dt}]`, () => {
      const [B, T, NH, NKV, HS] = [pB, pT, pNH, pNKV, pHS];
      const seg = pair(packedIds(B, T).segments, "i32");
      const q = pair(randn(B * T * NH * HS), dt), k = pair(randn(B * T * NKV * HS), dt);
      const v = pair(randn(B * T * NKV * HS), dt);
      const o = zeros(B * T * NH * HS, dt), lse = zeros(B * NH * T, "f32");
      cpu.attentionForward(o.c, lse.c, q.c, k.c, v.c, B, T, T, T, NH, NKV, HS, seg.c);
      gpu.attentionForward(o.g, lse.g, q.g, k.g, v.g, B, T, T, T, NH, NKV, HS, seg.g);
      const dy = pair(randn(B * T * NH * HS), dt);
      const dq = zeros(B * T * NH * HS, dt), dk = zeros(B * T * NKV * HS, dt);
      const dv = zeros(B * T * NKV * HS, dt);
      const oHost = gpu.download(o.g) as Float32Array,
        lHost = gpu.download(lse.g) as Float32Array;
      const out = [cmp("out", o, tolFor(dt, F32_PROD)), cmp("lse", lse, F32_PROD)];
      cpu.upload(o.c, oHost);
      cpu.upload(lse.c, lHost);
      cpu.attentionBackward(
        dq.c,
        dk.c,
        dv.c,
        dy.c,
        q.c,
        k.c,
        v.c,
        o.c,
        lse.c,
        B,
        T,
        NH,
        NKV,
        HS,
        seg.c,
      );
      gpu.attentionBackward(
        dq.g,
        dk.g,
        dv.g,
        dy.g,
        q.g,
        k.g,
        v.g,
        o.g,
        lse.g,
        B,
        T,
        NH,
        NKV,
        HS,
        seg.g,
      );
      out.push(cmp("dq", dq, tolFor(dt, F32_PROD)), cmp("dk", dk, tolFor(dt, F32_PROD)));
      out.push(cmp("dv", dv, tolFor(dt, F32_PROD)));
      return out;
    });
    // Sliding window and soft-capped scores (Mistral, Gemma 2; attention_variant.cu), with
    // packed segments on one of them, then decode past the window against a cache.
    const variants = [
      { window: 5, softcap: 2, scale: 0.3 },
      { window: 7 },
      { softcap: 3 },
    ];
    for (const [i, va] of variants.entries()) {
      const [B, T, NH, NKV, HS] = SMALL ? [2, 40, 4, 2, 16] : [2, 200, 8, 2, 64];
      check(`attention fwd+bwd variant ${JSON.stringify(va)} T=${T} [${dt}]`, () => {
        const seg = i === 1 ? pair(packedIds(B, T).segments, "i32") : null;
        const q = pair(randn(B * T * NH * HS), dt), k = pair(randn(B * T * NKV * HS), dt);
        const v = pair(randn(B * T * NKV * HS), dt);
        const o = zeros(B * T * NH * HS, dt), lse = zeros(B * NH * T, "f32");
        const sc = seg?.c ?? null, sg = seg?.g ?? null;
        cpu.attentionForward(o.c, lse.c, q.c, k.c, v.c, B, T, T, T, NH, NKV, HS, sc, va);
        gpu.attentionForward(o.g, lse.g, q.g, k.g, v.g, B, T, T, T, NH, NKV, HS, sg, va);
        const dy = pair(randn(B * T * NH * HS), dt);
        const dq = zeros(B * T * NH * HS, dt), dk = zeros(B * T * NKV * HS, dt);
        const dv = zeros(B * T * NKV * HS, dt);
        const out = [cmp("out", o, tolFor(dt, F32_PROD)), cmp("lse", lse, F32_PROD)];
        cpu.upload(o.c, gpu.download(o.g) as Float32Array);
        cpu.upload(lse.c, gpu.download(lse.g) as Float32Array);
        const [c, g] = [cpu, gpu];
        c.attentionBackward(
          dq.c,
          dk.c,
          dv.c,
          dy.c,
          q.c,
          k.c,
          v.c,
          o.c,
          lse.c,
          B,
          T,
          NH,
          NKV,
          HS,
          sc,
          va,
        );
        g.attentionBackward(
          dq.g,
          dk.g,
          dv.g,
          dy.g,
          q.g,
          k.g,
          v.g,
          o.g,
          lse.g,
          B,
          T,
          NH,
          NKV,
          HS,
          sg,
          va,
        );
        out.push(cmp("dq", dq, tolFor(dt, F32_PROD)), cmp("dk", dk, tolFor(dt, F32_PROD)));
        out.push(cmp("dv", dv, tolFor(dt, F32_PROD)));
        return out;
      });
    }
    check(`attention decode past a window of 9, soft-cap 2 [${dt}]`, () => {
      const B = 2, T = 1, Tk = sz(100, 40), Tcap = sz(128, 48), NH = 4, NKV = 2, HS = 32;
      const va = { window: 9, softcap: 2 };
      const q = pair(randn(B * T * NH * HS), dt);
      const k = pair(randn(B * Tcap * NKV * HS), dt), v = pair(randn(B * Tcap * NKV * HS), dt);
      const o = zeros(B * T * NH * HS, dt), lse = zeros(B * NH * T, "f32");
      cpu.attentionForward(o.c, lse.c, q.c, k.c, v.c, B, T, Tk, Tcap, NH, NKV, HS, null, va);
      gpu.attentionForward(o.g, lse.g, q.g, k.g, v.g, B, T, Tk, Tcap, NH, NKV, HS, null, va);
      return [cmp("out", o, tolFor(dt, F32_PROD)), cmp("lse", lse, F32_PROD)];
    });
    check(`logit soft-cap forward and backward [${dt}]`, () => {
      const n = sz(5000, 700);
      const x = pair(randn(n).map((a) => 40 * a), dt), d = pair(randn(n), dt);
      cpu.softcap!(x.c, 30);
      gpu.softcap!(x.g, 30);
      cpu.softcapBackward!(d.c, x.c, 30);
      gpu.softcapBackward!(d.g, x.g, 30);
      return [cmp("capped", x, tolFor(dt, F32_PROD)), cmp("grad", d, tolFor(dt, F32_PROD))];
    });
    for (const T of [1, 3]) {
      const Tk = sz(100, 40), Tcap = sz(128, 48);
      check(`attention decode T=${T} Tk=${Tk} Tcap=${Tcap} [${dt}]`, () => {
        const B = 2, NH = sz(8, 4), NKV = 2, HS = 64;
        const q = pair(randn(B * T * NH * HS), dt);
        const k = pair(randn(B * Tcap * NKV * HS), dt), v = pair(randn(B * Tcap * NKV * HS), dt);
        const o = zeros(B * T * NH * HS, dt), lse = zeros(B * NH * T, "f32");
        cpu.attentionForward(o.c, lse.c, q.c, k.c, v.c, B, T, Tk, Tcap, NH, NKV, HS);
        gpu.attentionForward(o.g, lse.g, q.g, k.g, v.g, B, T, Tk, Tcap, NH, NKV, HS);
        return [cmp("out", o, tolFor(dt, F32_PROD)), cmp("lse", lse, F32_PROD)];
      });
    }
  }
}

/** The opt-in tiled attention forward (TUNE_CUDA_ATTN=tiled) against the CPU. */
export function tiledAttentionChecks(): void {
  if (selfTest || !selected("tiled")) return;
  // A trailing 1 marks a packed (segment ids) case.
  const shapes: [number, number, number, number, number, number, number, number?][] = SMALL
    ? [[2, 9, 9, 9, 4, 2, 16], [1, 35, 35, 35, 2, 2, 16], [2, 3, 40, 48, 4, 2, 64], [
      2,
      90,
      90,
      90,
      2,
      1,
      16,
      1,
    ]]
    : [
      [2, 256, 256, 256, 8, 2, 64, 1], // packed
      // B, T, Tk, Tcap, NH, NKV, HS
      [2, 256, 256, 256, 16, 4, 64],
      [3, 33, 33, 33, 4, 4, 16],
      [1, 100, 100, 100, 8, 1, 128],
      [2, 1, 100, 128, 8, 2, 64], // decode
      [2, 3, 100, 128, 8, 2, 128],
    ];
  for (const dt of ["f32", "bf16"] as const) {
    for (const [B, T, Tk, Tcap, NH, NKV, HS, packed] of shapes) {
      const segH = packed ? packedIds(B, T).segments : null;
      check(
        `attention tiled fwd B=${B} T=${T} Tk=${Tk} NH=${NH} NKV=${NKV} HS=${HS}${
          packed ? " packed" : ""
        } [${dt}]`,
        () => {
          const be = createCudaBackend({ attention: "tiled" });
          const host = (n: number) => {
            const h = randn(n);
            if (dt === "bf16") roundArrayBf16(h, h.slice());
            return h;
          };
          const q = host(B * T * NH * HS), k = host(B * Tcap * NKV * HS);
          const v = host(B * Tcap * NKV * HS);
          const g = (h: Float32Array) => {
            const x = be.alloc(h.length, dt);
            be.upload(x, h);
            return x;
          };
          const og = be.alloc(B * T * NH * HS, dt), lg = be.alloc(B * NH * T, "f32");
          const sg = segH === null ? null : be.alloc(B * T, "i32");
          if (sg !== null) be.upload(sg, segH!);
          be.attentionForward(og, lg, g(q), g(k), g(v), B, T, Tk, Tcap, NH, NKV, HS, sg);
          const got = be.download(og), gotL = be.download(lg);
          be.destroy();
          const c = (h: Float32Array) => {
            const x = cpu.alloc(h.length);
            cpu.upload(x, h);
            return x;
          };
          const oc = cpu.alloc(B * T * NH * HS), lc = cpu.alloc(B * NH * T);
          const sc = segH === null ? null : cpu.alloc(B * T, "i32");
          if (sc !== null) cpu.upload(sc, segH!);
          cpu.attentionForward(oc, lc, c(q), c(k), c(v), B, T, Tk, Tcap, NH, NKV, HS, sc);
          return [
            cmpArrays("out", got, cpu.download(oc), tolFor(dt, F32_PROD)),
            cmpArrays("lse", gotL, cpu.download(lc), F32_PROD),
          ];
        },
      );
    }
  }
}

/**
 * The tensor-core kernels (kernels/flash_attention.cu, the default for bf16 at head size 64
 * or 128) against the general kernels (TUNE_CUDA_ATTN=simple, themselves checked against
 * the CPU above) at training sizes too large for the CPU oracle: forward and backward,
 * causal and packed, and a decode step against a KV cache. bf16 tolerances.
 */
export function flashAttentionChecks(): void {
  if (selfTest || !selected("flash")) return;
  // B, T, Tk, Tcap, NH, NKV, HS, packed
  const shapes: [number, number, number, number, number, number, number, boolean][] = SMALL
    ? [[1, 130, 130, 130, 2, 1, 64, false], [1, 80, 80, 80, 2, 1, 64, true], [
      1,
      2,
      70,
      72,
      2,
      1,
      64,
      false,
    ]]
    : [
      [2, 2048, 2048, 2048, 32, 8, 64, false], // Llama-3.2-1B attention at the benchmark's T
      [1, 1000, 1000, 1000, 32, 8, 128, false], // Llama-3-8B head size, ragged T
      [2, 1024, 1024, 1024, 16, 4, 64, true], // packed samples
      [2, 3, 700, 768, 32, 8, 128, false], // decode against a KV cache
    ];
  for (const [B, T, Tk, Tcap, NH, NKV, HS, packed] of shapes) {
    const name = `attention flash vs general B=${B} T=${T} Tk=${Tk} NH=${NH} NKV=${NKV} HS=${HS}${
      packed ? " packed" : ""
    } [bf16]`;
    check(name, () => {
      const flash = gpu as unknown as CudaBackend;
      const general = createCudaBackend({ attention: "simple" });
      const bufs: DeviceBuffer[] = [];
      const alloc = (n: number, dt: DType) => {
        const x = flash.alloc(n, dt);
        bufs.push(x);
        return x;
      };
      try {
        const up = (n: number) => {
          const x = alloc(n, "bf16");
          flash.upload(x, randn(n));
          return x;
        };
        const q = up(B * T * NH * HS), k = up(B * Tcap * NKV * HS), v = up(B * Tcap * NKV * HS);
        const seg = packed ? alloc(B * T, "i32") : null;
        if (seg !== null) flash.upload(seg, packedIds(B, T).segments);
        const outs = [0, 1].map(() => ({
          o: alloc(B * T * NH * HS, "bf16"),
          l: alloc(B * NH * T, "f32"),
        }));
        flash.attentionForward(outs[0].o, outs[0].l, q, k, v, B, T, Tk, Tcap, NH, NKV, HS, seg);
        general.attentionForward(outs[1].o, outs[1].l, q, k, v, B, T, Tk, Tcap, NH, NKV, HS, seg);
        const res: Outcome[] = [
          cmpArrays("out", flash.download(outs[0].o), general.download(outs[1].o), BF16),
          cmpArrays("lse", flash.download(outs[0].l), general.download(outs[1].l), F32_PROD),
        ];
        if (T === Tk) {
          const dy = up(B * T * NH * HS);
          const grads = [0, 1].map(() => ({
            dq: alloc(B * T * NH * HS, "bf16"),
            dk: alloc(B * T * NKV * HS, "bf16"),
            dv: alloc(B * T * NKV * HS, "bf16"),
          }));
          // Both read the general forward's outputs, so only the backward kernels differ.
          const { o, l } = outs[1];
          const [a, b] = grads;
          flash.attentionBackward(a.dq, a.dk, a.dv, dy, q, k, v, o, l, B, T, NH, NKV, HS, seg);
          general.attentionBackward(b.dq, b.dk, b.dv, dy, q, k, v, o, l, B, T, NH, NKV, HS, seg);
          for (const w of ["dq", "dk", "dv"] as const) {
            res.push(cmpArrays(w, flash.download(a[w]), general.download(b[w]), FLASH_GRAD));
          }
        }
        return res;
      } finally {
        general.destroy();
        for (const x of bufs) flash.free(x);
      }
    });
  }
}

/** The KV-cache write (kernels/elementwise.cu: kv_cache_write) at one dtype. */
export function kvCacheChecks(dt: "f32" | "bf16"): void {
  check(`kvCacheWrite [${dt}]`, () => {
    const B = 2, T = 7, Tcap = 64, W = 256, pos = 13;
    const cache = pair(randn(B * Tcap * W), dt), src = pair(randn(B * T * W), dt);
    cpu.kvCacheWrite(cache.c, src.c, B, T, Tcap, W, pos);
    gpu.kvCacheWrite(cache.g, src.g, B, T, Tcap, W, pos);
    return [cmp("cache", cache, EXACT)];
  });
}

gpuTest("attention: the KV-cache write", () => {
  for (const dt of ["f32", "bf16"] as const) kvCacheChecks(dt);
});
gpuTest("attention: attentionChecks", attentionChecks);
gpuTest("attention: tiledAttentionChecks", tiledAttentionChecks);
gpuTest("attention: flashAttentionChecks", flashAttentionChecks);
