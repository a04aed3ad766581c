/**
 * Kept attention probabilities (AttentionHeads' `probs`, src/backend/cpu/attention.ts): a
 * training forward that keeps its probabilities gives bitwise the same out and lse, and the
 * backward that reads them instead of recomputing them matches the PyTorch fixtures at the
 * gradient tolerance of cpu_ops_test.ts and the recompute within KEPT (the kept P is rounded to
 * fp32 once from exp(s - max) / sum, the recompute's from exp(s - lse): they differ in the last
 * bit, nothing more). The backend's two threads give the bits of attention.ts's kernels on one.
 * The model keeps them only within its budget.
 */
import { deepStrictEqual, equal, throws } from "node:assert";
import { assertClose, type Fixture, loadFixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { attentionBackward, attentionForward, probsFloats } from "../src/backend/cpu/attention.ts";
import { Gemm } from "../src/backend/cpu/gemm.ts";
import { Scratch } from "../src/backend/cpu/scratch.ts";
import { openBlas } from "../ffi/openblas.ts";
import type { AttentionVariant, Backend, DeviceBuffer } from "../src/backend/ops.ts";
import { attentionProbsFloats } from "../src/models/llama/activation_stash.ts";
import { lcgFloats } from "./_lcg.ts";

const GRAD = { atol: 1e-4, rtol: 1e-3 };
/** Kept against recomputed probabilities: a last-bit difference in P, carried through sums. */
const KEPT = { atol: 1e-6, rtol: 1e-5 };

const be = new CpuBackend();

function up(a: Float32Array | Int32Array): DeviceBuffer {
  const b = be.alloc(a.length, a instanceof Int32Array ? "i32" : "f32");
  be.upload(b, a);
  return b;
}

interface Case {
  B: number;
  T: number;
  NH: number;
  NKV: number;
  HS: number;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  dout: Float32Array;
  seg?: Int32Array;
  variant?: AttentionVariant;
}

/** The dims, q, k, v and dout of an ops fixture (q and k named `q${rot}`, `k${rot}`). */
function fixtureCase(f: Fixture, rot = ""): Case {
  const [B, T, NH, NKV, HS] = ["B", "T", "NH", "NKV", "HS"].map((k) => f.meta<number>(k));
  const [q, k] = [f.f32(`q${rot}`), f.f32(`k${rot}`)];
  return { B, T, NH, NKV, HS, q, k, v: f.f32("v"), dout: f.f32("dout") };
}

/** Forward and backward of `c` on the backend, keeping the probabilities or not. */
function run(c: Case, keep: boolean) {
  const { B, T, NH, NKV, HS } = c;
  const q = up(c.q), k = up(c.k), v = up(c.v);
  const seg = c.seg ? up(c.seg) : null, vt = c.variant ?? null;
  const probs = keep ? be.alloc(be.attentionProbsSize(B, T, NH)) : null;
  const out = be.alloc(B * T * NH * HS), lse = be.alloc(B * NH * T);
  be.attentionForward(out, lse, q, k, v, B, T, T, T, NH, NKV, HS, seg, vt, probs);
  const dq = be.alloc(B * T * NH * HS), dk = be.alloc(B * T * NKV * HS);
  const dv = be.alloc(B * T * NKV * HS);
  be.fill(dq, 7); // written, not accumulated
  be.attentionBackward(
    dq,
    dk,
    dv,
    up(c.dout),
    q,
    k,
    v,
    out,
    lse,
    B,
    T,
    NH,
    NKV,
    HS,
    seg,
    vt,
    probs,
  );
  const get = (b: DeviceBuffer) => be.download(b) as Float32Array;
  return { out: get(out), lse: get(lse), dq: get(dq), dk: get(dk), dv: get(dv) };
}

for (const name of ["ops_attention", "ops_attention_mqa", "ops_attention_long"]) {
  Deno.test(`attention with kept probabilities: same forward bits, backward matches torch and the recompute (${name})`, () => {
    const f = loadFixture(name);
    const c = fixtureCase(f);
    const kept = run(c, true), again = run(c, false);
    deepStrictEqual(kept.out, again.out);
    deepStrictEqual(kept.lse, again.lse);
    for (const g of ["dq", "dk", "dv"] as const) {
      assertClose(g, kept[g], f.f32(g), GRAD);
      assertClose(`${g} kept vs recomputed`, kept[g], again[g], KEPT);
    }
  });
}

Deno.test("attention with kept probabilities and segments matches the block-causal torch mask", () => {
  const f = loadFixture("ops_packed");
  const kept = run({ ...fixtureCase(f, "_rot"), seg: f.i32("segments") }, true);
  assertClose("dq_rot", kept.dq, f.f32("dq_rot"), GRAD);
  assertClose("dk_rot", kept.dk, f.f32("dk_rot"), GRAD);
  assertClose("dv", kept.dv, f.f32("dv"), GRAD);
});

/** 2 x 8 heads of 256 rows (2^20 scores: the backend splits them over two threads). */
function bigCase(extra: Partial<Case>): Case {
  const B = 2, T = 256, NH = 8, NKV = 4, HS = 8;
  const nq = B * T * NH * HS, nkv = B * T * NKV * HS;
  const seg = Int32Array.from({ length: B * T }, (_, i) => ((i % T) / 100) | 0);
  return {
    B,
    T,
    NH,
    NKV,
    HS,
    q: lcgFloats(nq, 1),
    k: lcgFloats(nkv, 2),
    v: lcgFloats(nkv, 3),
    dout: lcgFloats(nq, 4),
    ...(extra.seg === undefined ? {} : { seg }),
    ...(extra.variant ? { variant: extra.variant } : {}),
  };
}

for (
  const [label, extra] of [
    ["causal", {}],
    ["sliding window 37, scale 0.4", { variant: { window: 37, scale: 0.4 } }],
    ["segments", { seg: new Int32Array(0) }],
  ] as const
) {
  Deno.test(`attention with kept probabilities (${label}): the recompute's gradients, and one thread's bits on two`, () => {
    const c = bigCase(extra);
    const kept = run(c, true), again = run(c, false);
    deepStrictEqual(kept.out, again.out);
    for (const g of ["dq", "dk", "dv"] as const) {
      assertClose(`${g} kept vs recomputed`, kept[g], again[g], KEPT);
    }
    const single = oneThread(c);
    for (const g of ["out", "lse", "dq", "dk", "dv"] as const) deepStrictEqual(kept[g], single[g]);
  });
}

/** `run(c, true)` by attention.ts's kernels on this thread alone (as cpu_pool_test.ts). */
function oneThread(c: Case) {
  const { B, T, NH, NKV, HS } = c;
  const nq = B * T * NH * HS, nkv = B * T * NKV * HS;
  const probs = new Float32Array(probsFloats(B, T, NH));
  const d = { B, T, Tk: T, Tcap: T, NH, NKV, HS, seg: c.seg ?? null, ...c.variant, probs };
  const gemm = new Gemm(be.matmulPath === "blas" ? openBlas() : null, new Scratch());
  const out = new Float32Array(nq), lse = new Float32Array(B * NH * T);
  attentionForward(gemm, out, lse, c.q, c.k, c.v, d, new Float32Array(64 * T));
  const dq = new Float32Array(nq), dk = new Float32Array(nkv), dv = new Float32Array(nkv);
  const p = new Float32Array(64 * T), dp = new Float32Array(64 * T);
  attentionBackward(gemm, dq, dk, dv, c.dout, c.q, c.k, c.v, out, lse, d, p, dp);
  return { out, lse, dq, dk, dv };
}

Deno.test("attention refuses kept probabilities with a soft-cap or a KV cache", () => {
  const B = 1, T = 4, NH = 2, NKV = 2, HS = 4;
  const q = up(lcgFloats(B * T * NH * HS, 5)), kv = up(lcgFloats(B * 8 * NKV * HS, 6));
  const out = be.alloc(B * T * NH * HS), lse = be.alloc(B * NH * T);
  const probs = be.alloc(be.attentionProbsSize(B, 8, NH));
  const cap = { softcap: 2 };
  throws(
    () => be.attentionForward(out, lse, q, kv, kv, B, T, T, T, NH, NKV, HS, null, cap, probs),
    /soft-cap/,
  );
  throws(
    () => be.attentionForward(out, lse, q, kv, kv, B, T, 6, 8, NH, NKV, HS, null, null, probs),
    /training forward/,
  );
});

Deno.test("the model keeps attention probabilities only within its budget", () => {
  const d = { B: 8, T: 512, C: 64, NH: 8, NKV: 4, HS: 8, H: 172 };
  // per set: 8 x 8 heads x 64 x 64 x (1 + 2 + ... + 8) floats
  equal(probsFloats(8, 512, 8), 8 * 8 * 64 * 64 * 36);
  equal(attentionProbsFloats(be, d, 5), probsFloats(8, 512, 8)); // 188.7 MB: kept
  equal(attentionProbsFloats(be, d, 8), 0); // 302 MB: over 256 MiB, recomputed
  const noKeeping = { attentionProbsSize: undefined } as unknown as Backend;
  equal(attentionProbsFloats(noKeeping, d, 1), 0);
});
