/**
 * Module-level parity with PyTorch (tests/reference/model_reference.py): rope tables with
 * and without Llama 3.1 scaling, the dropout mask generator as the reference reproduces
 * it, and one LoRA linear (bias, dropout 0.3) forward and every gradient.
 * Tolerances: forward atol 1e-5 rtol 1e-4; gradients atol 1e-4 rtol 1e-3; masks exact.
 */
import { assertClose, loadFixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { ropeTables } from "../src/modules/rope.ts";
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
