/**
 * Module-level parity with PyTorch (tests/reference/model_reference.py): rope tables with
 * and without Llama 3.1 scaling, the dropout mask generator as the reference reproduces
 * it, and forward plus every gradient of a LoRA linear (bias, dropout 0.3), RmsNorm,
 * Attention (GQA, q/k/v bias, rotate-half rope) and FeedForward (SwiGLU).
 * Tolerances: forward atol 1e-5 rtol 1e-4; gradients atol 1e-4 rtol 1e-3; masks exact.
 */
import { assertClose, loadFixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { ropeTables, uploadRope } from "../src/modules/rope.ts";
import { RmsNorm } from "../src/modules/rms_norm.ts";
import { Attention } from "../src/modules/attention.ts";
import { FeedForward } from "../src/modules/feed_forward.ts";
import { Allocator, allocBackwardScratch, allocLayerActs } from "../src/modules/activations.ts";
import { Linear } from "../src/modules/linear.ts";
import { Lora } from "../src/modules/lora.ts";
import { mixSeed } from "../src/params/random.ts";
import { ok as assert } from "node:assert";

Deno.test("ropeTables() matches torchtune tables with and without Llama 3.1 scaling", () => {
  const fx = loadFixture("model_modules");
  const scaled = ropeTables(16, 40, 10000, {
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 16,
  });
  assertClose("scaled cos", scaled.cos, fx.f32("rope_scaled.cos"), { atol: 1e-5, rtol: 1e-4 });
  assertClose("scaled sin", scaled.sin, fx.f32("rope_scaled.sin"), { atol: 1e-5, rtol: 1e-4 });
  const plain = ropeTables(8, 40, 500000, null);
  assertClose("plain cos", plain.cos, fx.f32("rope_plain.cos"), { atol: 1e-5, rtol: 1e-4 });
  assertClose("plain sin", plain.sin, fx.f32("rope_plain.sin"), { atol: 1e-5, rtol: 1e-4 });
  // the scaling changes the low frequencies: the tables must differ from unscaled ones
  const unscaled = ropeTables(16, 40, 10000, null);
  let differ = 0;
  for (let i = 0; i < unscaled.cos.length; i++) if (unscaled.cos[i] !== scaled.cos[i]) differ++;
  assert(differ > 0, "scaling changed nothing");
});

Deno.test("mixSeed() and backend.dropoutMask() give the masks the reference reproduces", () => {
  const fx = loadFixture("model_modules");
  const be = new CpuBackend();
  const [a, b, c] = fx.meta<number[]>("mask_seed");
  const mask = be.alloc(300);
  be.dropoutMask(mask, 0.25, mixSeed(a, b, c));
  assertClose("mask", be.download(mask), fx.f32("mask"), { atol: 0, rtol: 0 });
});

Deno.test("Linear with a Lora adapter matches PyTorch forward and gradients with dropout", () => {
  const fx = loadFixture("model_modules");
  const m = fx.meta<
    {
      N: number;
      in: number;
      out: number;
      rank: number;
      alpha: number;
      dropout: number;
      layer_seed: number;
      seed_index: number;
    }
  >("lora");
  const be = new CpuBackend();
  const up = (name: string) => {
    const d = fx.f32(name);
    const buf = be.alloc(d.length);
    be.upload(buf, d);
    return buf;
  };
  const grad = (n: number) => be.alloc(n);
  const { N, rank: r } = m;
  const x = up("lora.x");
  const dw = grad(m.out * m.in), db = grad(m.out), da = grad(r * m.in), dB = grad(m.out * r);
  const scratch = { xd: be.alloc(N * m.in), dxd: be.alloc(N * m.in), dh: be.alloc(N * r) };
  const lora = new Lora(m.in, m.out, r, m.alpha, m.dropout, {
    a: up("lora.a"),
    b: up("lora.b"),
    da,
    db: dB,
  }, scratch);
  const lin = new Linear(m.in, m.out, { w: up("lora.w"), b: up("lora.bias"), dw, db }, lora);
  const y = be.alloc(N * m.out);
  const hs = be.alloc(N * r);
  const seed = mixSeed(m.layer_seed, m.seed_index);
  lin.forward(be, y, x, N, hs, seed);
  assertClose("lora y", be.download(y), fx.f32("lora.y"), { atol: 1e-5, rtol: 1e-4 });
  const dx = be.alloc(N * m.in);
  lin.backward(be, dx, up("lora.dy"), x, N, hs, seed);
  const tol = { atol: 1e-4, rtol: 1e-3 };
  assertClose("lora dx", be.download(dx), fx.f32("lora.dx"), tol);
  assertClose("lora dw", be.download(dw), fx.f32("lora.dw"), tol);
  assertClose("lora dbias", be.download(db), fx.f32("lora.dbias"), tol);
  assertClose("lora da", be.download(da), fx.f32("lora.da"), tol);
  assertClose("lora db", be.download(dB), fx.f32("lora.db"), tol);
});

/** Upload fixture tensors and allocate zeroed gradient buffers of the same size. */
function uploader(be: CpuBackend, fx: ReturnType<typeof loadFixture>) {
  return {
    up(name: string) {
      const d = fx.f32(name);
      const buf = be.alloc(d.length);
      be.upload(buf, d);
      return buf;
    },
    zeros(name: string) {
      return be.alloc(fx.f32(name).length);
    },
  };
}

const GRAD_TOL = { atol: 1e-4, rtol: 1e-3 };
const FWD_TOL = { atol: 1e-5, rtol: 1e-4 };

Deno.test("RmsNorm forward and backward match PyTorch", () => {
  const fx = loadFixture("model_modules");
  const be = new CpuBackend();
  const { up, zeros } = uploader(be, fx);
  const dscale = zeros("norm.scale");
  const norm = new RmsNorm(8, 1e-5, up("norm.scale"), dscale);
  const x = up("norm.x");
  const y = zeros("norm.y");
  const rstd = be.alloc(6);
  norm.forward(be, y, rstd, x, 6);
  assertClose("norm y", be.download(y), fx.f32("norm.y"), FWD_TOL);
  const dx = zeros("norm.x");
  norm.backward(be, dx, up("norm.dy"), x, rstd, 6);
  assertClose("norm dx", be.download(dx), fx.f32("norm.dx"), GRAD_TOL);
  assertClose("norm dscale", be.download(dscale), fx.f32("norm.dscale"), GRAD_TOL);
});

Deno.test("Attention (GQA, q/k/v bias, rotate-half rope) forward and backward match PyTorch", () => {
  const fx = loadFixture("model_modules");
  const be = new CpuBackend();
  const { up, zeros } = uploader(be, fx);
  const B = 2, T = 5, C = 16, NH = 4, NKV = 2, HS = 4;
  const lin = (w: string, b: string | null, inDim: number, outDim: number) => {
    const p = {
      w: up(`attn.${w}`),
      b: b ? up(`attn.${b}`) : null,
      dw: zeros(`attn.${w}`),
      db: b ? zeros(`attn.${b}`) : null,
    };
    return new Linear(inDim, outDim, p);
  };
  const q = lin("wq", "bq", C, NH * HS);
  const k = lin("wk", "bk", C, NKV * HS);
  const v = lin("wv", "bv", C, NKV * HS);
  const o = lin("wo", null, NH * HS, C);
  const rope = uploadRope(be, ropeTables(HS, T, 10000, null));
  const attn = new Attention({ NH, NKV, HS }, q, k, v, o, rope, "half");
  const al = new Allocator(be);
  const dims = { B, T, C, NH, NKV, HS, H: 1 };
  const acts = allocLayerActs(al, "a", dims, {});
  const sc = allocBackwardScratch(al, "s", dims);
  const x = up("attn.x");
  const y = zeros("attn.y");
  attn.forward(be, y, x, acts, B, T, null);
  assertClose("attn y", be.download(y), fx.f32("attn.y"), FWD_TOL);
  const dx = zeros("attn.x");
  attn.backward(be, dx, up("attn.dy"), x, acts, sc, B, T, null);
  assertClose("attn dx", be.download(dx), fx.f32("attn.dx"), GRAD_TOL);
  for (const [name, l] of [["wq", q], ["wk", k], ["wv", v], ["wo", o]] as const) {
    assertClose(`attn d${name}`, be.download(l.p.dw!), fx.f32(`attn.d${name}`), GRAD_TOL);
  }
  for (const [name, l] of [["bq", q], ["bk", k], ["bv", v]] as const) {
    assertClose(`attn d${name}`, be.download(l.p.db!), fx.f32(`attn.d${name}`), GRAD_TOL);
  }
});

Deno.test("FeedForward (SwiGLU) forward and backward match PyTorch", () => {
  const fx = loadFixture("model_modules");
  const be = new CpuBackend();
  const { up, zeros } = uploader(be, fx);
  const N = 6, C = 8, H = 12;
  const lin = (w: string, inDim: number, outDim: number) =>
    new Linear(inDim, outDim, { w: up(`ffn.${w}`), b: null, dw: zeros(`ffn.${w}`), db: null });
  const w1 = lin("w1", C, H), w2 = lin("w2", H, C), w3 = lin("w3", C, H);
  const ffn = new FeedForward(H, w1, w2, w3);
  const al = new Allocator(be);
  const dims = { B: 1, T: N, C, NH: 1, NKV: 1, HS: 2, H };
  const acts = allocLayerActs(al, "a", dims, {});
  const sc = allocBackwardScratch(al, "s", dims);
  const x = up("ffn.x");
  const y = zeros("ffn.y");
  ffn.forward(be, y, x, acts, N, null);
  assertClose("ffn y", be.download(y), fx.f32("ffn.y"), FWD_TOL);
  const dx = zeros("ffn.x");
  ffn.backward(be, dx, up("ffn.dy"), x, acts, sc, N, null);
  assertClose("ffn dx", be.download(dx), fx.f32("ffn.dx"), GRAD_TOL);
  for (const [name, l] of [["w1", w1], ["w2", w2], ["w3", w3]] as const) {
    assertClose(`ffn d${name}`, be.download(l.p.dw!), fx.f32(`ffn.d${name}`), GRAD_TOL);
  }
});
