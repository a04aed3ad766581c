/**
 * Packed samples on the CPU backend: rope at per-token positions and block-causal
 * attention (segment ids) against the PyTorch fixture ops_packed (tests/reference/
 * ops_reference.py: explicit -inf mask, rope at given positions), and the two-thread split
 * of segment-masked attention against the one-thread kernel.
 * Tolerances: forward fp32 atol 1e-5 rtol 1e-4; gradients fp32 atol 1e-4 rtol 1e-3;
 * the split: exact (bitwise). Run under TUNE_CPU_MATMUL=ts and TUNE_CPU_THREADS=1 too.
 */
import { deepStrictEqual, throws } from "node:assert";
import { assertClose, loadFixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { attentionBackward, attentionForward } from "../src/backend/cpu/attention.ts";
import { Gemm } from "../src/backend/cpu/gemm.ts";
import { Scratch } from "../src/backend/cpu/scratch.ts";
import type { DeviceBuffer } from "../src/backend/ops.ts";
import { openBlas } from "../ffi/openblas.ts";
import { lcgFloats } from "./_lcg.ts";

const FWD = { atol: 1e-5, rtol: 1e-4 };
const GRAD = { atol: 1e-4, rtol: 1e-3 };

const be = new CpuBackend();

function up(a: Float32Array | Int32Array): DeviceBuffer {
  const b = be.alloc(a.length, a instanceof Int32Array ? "i32" : "f32");
  be.upload(b, a);
  return b;
}
function down(b: DeviceBuffer): Float32Array {
  return be.download(b) as Float32Array;
}

Deno.test("rope() with positions matches torch rotation at per-token positions (both layouts)", () => {
  const f = loadFixture("ops_packed");
  const [B, T, NH, NKV, HS] = ["B", "T", "NH", "NKV", "HS"].map((k) => f.meta<number>(k));
  const cos = up(f.f32("cos")), sin = up(f.f32("sin")), pos = up(f.i32("positions"));
  const qi = up(f.f32("q"));
  // pos = 1000 must be ignored when positions are given
  be.rope(qi, cos, sin, B, T, NH, HS, 1000, "interleaved", false, pos);
  assertClose("q_rot_interleaved", down(qi), f.f32("q_rot_interleaved"), FWD);
  const q = up(f.f32("q")), k = up(f.f32("k"));
  be.rope(q, cos, sin, B, T, NH, HS, 0, "half", false, pos);
  be.rope(k, cos, sin, B, T, NKV, HS, 0, "half", false, pos);
  assertClose("q_rot", down(q), f.f32("q_rot"), FWD);
  assertClose("k_rot", down(k), f.f32("k_rot"), FWD);
  // Backward: the inverse rotation at the same positions is autograd's gradient.
  const dq = up(f.f32("dq_rot")), dk = up(f.f32("dk_rot"));
  be.rope(dq, cos, sin, B, T, NH, HS, 0, "half", true, pos);
  be.rope(dk, cos, sin, B, T, NKV, HS, 0, "half", true, pos);
  assertClose("dq", down(dq), f.f32("dq"), GRAD);
  assertClose("dk", down(dk), f.f32("dk"), GRAD);
});

Deno.test("rope() throws when a position is past the rotary table", () => {
  const f = loadFixture("ops_packed");
  const HS = f.meta<number>("HS"), Tmax = f.meta<number>("Tmax");
  const x = be.alloc(2 * HS);
  const pos = up(new Int32Array([0, Tmax]));
  throws(() => be.rope(x, up(f.f32("cos")), up(f.f32("sin")), 1, 2, 1, HS, 0, "half", false, pos));
});

Deno.test("attentionForward()/attentionBackward() with segments match the block-causal torch mask", () => {
  const f = loadFixture("ops_packed");
  const [B, T, NH, NKV, HS] = ["B", "T", "NH", "NKV", "HS"].map((k) => f.meta<number>(k));
  const seg = up(f.i32("segments"));
  const q = up(f.f32("q_rot")), k = up(f.f32("k_rot")), v = up(f.f32("v"));
  const out = be.alloc(B * T * NH * HS), lse = be.alloc(B * NH * T);
  be.attentionForward(out, lse, q, k, v, B, T, T, T, NH, NKV, HS, seg);
  assertClose("out", down(out), f.f32("out"), FWD);
  assertClose("lse", down(lse), f.f32("lse"), FWD);
  const dq = be.alloc(B * T * NH * HS), dk = be.alloc(B * T * NKV * HS);
  const dv = be.alloc(B * T * NKV * HS);
  be.fill(dq, 7); // written, not accumulated
  be.attentionBackward(dq, dk, dv, up(f.f32("dout")), q, k, v, out, lse, B, T, NH, NKV, HS, seg);
  assertClose("dq_rot", down(dq), f.f32("dq_rot"), GRAD);
  assertClose("dk_rot", down(dk), f.f32("dk_rot"), GRAD);
  assertClose("dv", down(dv), f.f32("dv"), GRAD);
});

Deno.test("attentionForward() refuses segments with a KV cache (Tk > T)", () => {
  const q = be.alloc(8), kv = be.alloc(16), out = be.alloc(8), lse = be.alloc(1);
  const seg = up(new Int32Array(1));
  throws(() => be.attentionForward(out, lse, q, kv, kv, 1, 1, 2, 2, 1, 1, 8, seg));
});

Deno.test("attentionForward()/attentionBackward() with segments split across two threads equal one thread bitwise", () => {
  const B = 2, T = 256, NH = 8, NKV = 4, HS = 8; // B*NH*T*T = 2^20 scores: split when pooled
  const nq = B * T * NH * HS, nkv = B * T * NKV * HS;
  const hq = lcgFloats(nq, 31),
    hk = lcgFloats(nkv, 32),
    hv = lcgFloats(nkv, 33),
    hdo = lcgFloats(nq, 34);
  // row 0: segments of 100, 90, 66 tokens; row 1: 7 then 249
  const hs = new Int32Array(B * T).map((_, i) => {
    const t = i % T;
    return i < T ? (t < 100 ? 0 : t < 190 ? 1 : 2) : (t < 7 ? 5 : 6);
  });
  const seg = up(hs);
  const q = up(hq), k = up(hk), v = up(hv), dout = up(hdo);
  const out = be.alloc(nq), lse = be.alloc(B * NH * T);
  const dq = be.alloc(nq), dk = be.alloc(nkv), dv = be.alloc(nkv);
  be.attentionForward(out, lse, q, k, v, B, T, T, T, NH, NKV, HS, seg);
  be.attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, B, T, NH, NKV, HS, seg);
  const d = { B, T, Tk: T, Tcap: T, NH, NKV, HS, seg: hs };
  const gemm = new Gemm(be.matmulPath === "blas" ? openBlas() : null, new Scratch());
  gemm.maxThreads = 1;
  const rOut = new Float32Array(nq), rLse = new Float32Array(B * NH * T);
  attentionForward(gemm, rOut, rLse, hq, hk, hv, d, new Float32Array(64 * T));
  const rdq = new Float32Array(nq), rdk = new Float32Array(nkv), rdv = new Float32Array(nkv);
  const p = new Float32Array(64 * T), dp = new Float32Array(64 * T);
  attentionBackward(gemm, rdq, rdk, rdv, hdo, hq, hk, hv, rOut, rLse, d, p, dp);
  deepStrictEqual(down(out), rOut);
  deepStrictEqual(down(lse), rLse);
  deepStrictEqual(down(dq), rdq);
  deepStrictEqual(down(dk), rdk);
  deepStrictEqual(down(dv), rdv);
});

Deno.test("attentionForward() with segments equals each segment attended alone", () => {
  const T = 9, NH = 2, NKV = 1, HS = 4, cut = 4; // segments [0, 4) and [4, 9)
  const hq = lcgFloats(T * NH * HS, 41),
    hk = lcgFloats(T * NKV * HS, 42),
    hv = lcgFloats(T * NKV * HS, 43);
  const seg = up(new Int32Array(T).map((_, t) => (t < cut ? 0 : 1)));
  const out = be.alloc(T * NH * HS), lse = be.alloc(NH * T);
  be.attentionForward(out, lse, up(hq), up(hk), up(hv), 1, T, T, T, NH, NKV, HS, seg);
  const packed = down(out);
  for (const [t0, t1] of [[0, cut], [cut, T]]) {
    const n = t1 - t0;
    const o = be.alloc(n * NH * HS), l = be.alloc(NH * n);
    const part = (h: Float32Array, w: number) => up(h.slice(t0 * w, t1 * w));
    const [qw, kw] = [NH * HS, NKV * HS];
    be.attentionForward(o, l, part(hq, qw), part(hk, kw), part(hv, kw), 1, n, n, n, NH, NKV, HS);
    assertClose(`rows ${t0}..${t1 - 1}`, packed.slice(t0 * qw, t1 * qw), down(o), FWD);
  }
});
