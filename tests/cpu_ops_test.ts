/**
 * CPU backend ops against PyTorch fixtures (tests/reference/ops_reference.py).
 * Tolerances: forward fp32 atol 1e-5 rtol 1e-4; gradients fp32 atol 1e-4 rtol 1e-3.
 * The matmul path follows TUNE_CPU_MATMUL; CI runs this file with it unset (OpenBLAS)
 * and with TUNE_CPU_MATMUL=ts, with the same tolerances.
 */
import { assertClose, loadFixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import type { DeviceBuffer } from "../src/backend/ops.ts";
import { TuneError } from "../src/errors.ts";
import { deepStrictEqual, equal, ok, throws } from "node:assert";
import { lcgFloats } from "./_lcg.ts";

const FWD = { atol: 1e-5, rtol: 1e-4 };
const GRAD = { atol: 1e-4, rtol: 1e-3 };

const be = new CpuBackend();

function up(a: Float32Array | Int32Array): DeviceBuffer {
  const b = be.alloc(a.length, a instanceof Int32Array ? "i32" : "f32");
  be.upload(b, a);
  return b;
}
function zeros(n: number): DeviceBuffer {
  return be.alloc(n);
}
function down(b: DeviceBuffer): Float32Array {
  return be.download(b) as Float32Array;
}
function plus(a: Float32Array, b: Float32Array): Float32Array {
  return a.map((x, i) => x + b[i]);
}
/** Deterministic pseudo-random values in [-1, 1) (not the dropout generator). */

Deno.test(`CpuBackend uses the ${be.matmulPath} matmul path`, () => {
  const want = Deno.env.get("TUNE_CPU_MATMUL") === "ts" ? "ts" : "blas";
  equal(be.matmulPath, want);
});

Deno.test("matmulForward() matches F.linear with and without bias, and accumulates", () => {
  const f = loadFixture("ops_matmul");
  const [M, K, N] = [f.meta<number>("M"), f.meta<number>("K"), f.meta<number>("N")];
  const inp = up(f.f32("inp")), w = up(f.f32("weight")), bias = up(f.f32("bias"));
  const out = zeros(M * N);
  be.fill(out, NaN); // overwritten, not accumulated (a stale NaN must not survive)
  be.matmulForward(out, inp, w, bias, M, K, N);
  assertClose("out", down(out), f.f32("out"), FWD);
  be.matmulForward(out, inp, w, null, M, K, N);
  assertClose("out_nobias", down(out), f.f32("out_nobias"), FWD);
  be.matmulForward(out, inp, w, bias, M, K, N, true);
  assertClose("out accumulate", down(out), plus(f.f32("out_nobias"), f.f32("out")), FWD);
});

Deno.test("matmulBackward() accumulates dinp, dweight, dbias like autograd", () => {
  const f = loadFixture("ops_matmul");
  const [M, K, N] = [f.meta<number>("M"), f.meta<number>("K"), f.meta<number>("N")];
  const inp = up(f.f32("inp")), w = up(f.f32("weight")), dout = up(f.f32("dout"));
  const dinp = zeros(M * K), dw = zeros(N * K), db = zeros(N);
  be.matmulBackward(dinp, dw, db, dout, inp, w, M, K, N);
  assertClose("dinp", down(dinp), f.f32("dinp"), GRAD);
  assertClose("dweight", down(dw), f.f32("dweight"), GRAD);
  assertClose("dbias", down(db), f.f32("dbias"), GRAD);
  be.matmulBackward(dinp, dw, db, dout, inp, w, M, K, N);
  assertClose("dinp x2", down(dinp), f.f32("dinp").map((x) => 2 * x), GRAD);
  assertClose("dweight x2", down(dw), f.f32("dweight").map((x) => 2 * x), GRAD);
  assertClose("dbias x2", down(db), f.f32("dbias").map((x) => 2 * x), GRAD);
  const dinpOnly = zeros(M * K);
  be.matmulBackward(dinpOnly, null, null, dout, inp, w, M, K, N);
  assertClose("dinp only", down(dinpOnly), f.f32("dinp"), GRAD);
});

Deno.test("embeddingForward() gathers rows and embeddingBackward() accumulates repeats", () => {
  const f = loadFixture("ops_embedding");
  const [N, C] = [f.meta<number>("N"), f.meta<number>("C")];
  const tokens = up(f.i32("tokens")), table = up(f.f32("table"));
  const out = zeros(N * C);
  be.embeddingForward(out, tokens, table, N, C);
  assertClose("out", down(out), f.f32("out"), FWD);
  const dtable = zeros(f.f32("table").length);
  be.fill(dtable, 1);
  be.embeddingBackward(dtable, up(f.f32("dout")), tokens, N, C);
  assertClose("dtable", down(dtable), f.f32("dtable").map((x) => x + 1), GRAD);
});

Deno.test("embeddingForward() throws TuneError when a token is outside the vocabulary", () => {
  const table = zeros(4 * 2), out = zeros(2);
  throws(() => be.embeddingForward(out, up(new Int32Array([4])), table, 1, 2), TuneError);
});

Deno.test("rmsnormForward()/rmsnormBackward() match torchtune's RMSNorm", () => {
  const f = loadFixture("ops_rmsnorm");
  const [N, C, eps] = [f.meta<number>("N"), f.meta<number>("C"), f.meta<number>("eps")];
  const inp = up(f.f32("inp")), w = up(f.f32("weight"));
  const out = zeros(N * C), rstd = zeros(N);
  be.rmsnormForward(out, rstd, inp, w, N, C, eps);
  assertClose("out", down(out), f.f32("out"), FWD);
  assertClose("rstd", down(rstd), f.f32("rstd"), FWD);
  const dinp = zeros(N * C), dw = zeros(C);
  be.fill(dinp, 0.5);
  be.rmsnormBackward(dinp, dw, up(f.f32("dout")), inp, w, rstd, N, C);
  assertClose("dinp", down(dinp), f.f32("dinp").map((x) => x + 0.5), GRAD);
  assertClose("dweight", down(dw), f.f32("dweight"), GRAD);
});

for (const layout of ["interleaved", "half"] as const) {
  Deno.test(`rope() matches the ${layout} torch rotation at a position offset`, () => {
    const f = loadFixture("ops_rope");
    const [B, T, NH, HS, pos] = ["B", "T", "NH", "HS", "pos"].map((k) => f.meta<number>(k));
    const cos = up(f.f32("cos")), sin = up(f.f32("sin"));
    const x = up(f.f32("x"));
    be.rope(x, cos, sin, B, T, NH, HS, pos, layout, false);
    assertClose("out", down(x), f.f32(`out_${layout}`), FWD);
    // Backward: the inverse rotation of dout is autograd's dx.
    const dx = up(f.f32("dout"));
    be.rope(dx, cos, sin, B, T, NH, HS, pos, layout, true);
    assertClose("dx", down(dx), f.f32(`dx_${layout}`), GRAD);
    // Forward then inverse is the identity.
    be.rope(x, cos, sin, B, T, NH, HS, pos, layout, true);
    assertClose("roundtrip", down(x), f.f32("x"), FWD);
  });
}

Deno.test("rope() throws TuneError when positions run past the table", () => {
  const f = loadFixture("ops_rope");
  const Tmax = f.meta<number>("Tmax");
  const x = zeros(2 * 8);
  throws(
    () => be.rope(x, up(f.f32("cos")), up(f.f32("sin")), 1, 2, 1, 8, Tmax - 1, "half", false),
    TuneError,
  );
});

for (const name of ["ops_attention", "ops_attention_mqa", "ops_attention_long"]) {
  Deno.test(`attentionForward()/attentionBackward() match causal GQA softmax (${name})`, () => {
    const f = loadFixture(name);
    const [B, T, NH, NKV, HS] = ["B", "T", "NH", "NKV", "HS"].map((k) => f.meta<number>(k));
    const q = up(f.f32("q")), k = up(f.f32("k")), v = up(f.f32("v"));
    const out = zeros(B * T * NH * HS), lse = zeros(B * NH * T);
    be.attentionForward(out, lse, q, k, v, B, T, T, T, NH, NKV, HS);
    assertClose("out", down(out), f.f32("out"), FWD);
    assertClose("lse", down(lse), f.f32("lse"), FWD);
    const dq = zeros(B * T * NH * HS), dk = zeros(B * T * NKV * HS), dv = zeros(B * T * NKV * HS);
    be.fill(dq, 7); // written, not accumulated
    be.attentionBackward(dq, dk, dv, up(f.f32("dout")), q, k, v, out, lse, B, T, NH, NKV, HS);
    assertClose("dq", down(dq), f.f32("dq"), GRAD);
    assertClose("dk", down(dk), f.f32("dk"), GRAD);
    assertClose("dv", down(dv), f.f32("dv"), GRAD);
  });
}

/** Rows [t0, t1) of every batch of x(B, T, W) as (B, t1 - t0, W). */
function rows(x: Float32Array, B: number, T: number, W: number, t0: number, t1: number) {
  const out = new Float32Array(B * (t1 - t0) * W);
  for (let b = 0; b < B; b++) {
    out.set(x.subarray((b * T + t0) * W, (b * T + t1) * W), b * (t1 - t0) * W);
  }
  return out;
}

/**
 * Fill a KV cache of capacity Tcap with the fixture's k/v rows 0..Tk-1 (a prefill of
 * `prefill` rows, then one row at a time as a decoder does), run attentionForward for
 * query rows [t0, Tk) and compare with the fixture's full causal attention rows.
 */
function checkCachedAttention(name: string, Tk: number, Tcap: number, prefill: number, t0: number) {
  const f = loadFixture(name);
  const [B, T, NH, NKV, HS] = ["B", "T", "NH", "NKV", "HS"].map((k) => f.meta<number>(k));
  const W = NKV * HS;
  const kc = zeros(B * Tcap * W), vc = zeros(B * Tcap * W);
  be.fill(kc, 1e3); // stale rows at and beyond Tk must not be read
  be.fill(vc, 1e3);
  const kAll = f.f32("k"), vAll = f.f32("v"), qAll = f.f32("q");
  be.kvCacheWrite(kc, up(rows(kAll, B, T, W, 0, prefill)), B, prefill, Tcap, W, 0);
  be.kvCacheWrite(vc, up(rows(vAll, B, T, W, 0, prefill)), B, prefill, Tcap, W, 0);
  for (let p = prefill; p < Tk; p++) {
    be.kvCacheWrite(kc, up(rows(kAll, B, T, W, p, p + 1)), B, 1, Tcap, W, p);
    be.kvCacheWrite(vc, up(rows(vAll, B, T, W, p, p + 1)), B, 1, Tcap, W, p);
  }
  const Tq = Tk - t0;
  const out = zeros(B * Tq * NH * HS), lse = zeros(B * NH * Tq);
  const q = up(rows(qAll, B, T, NH * HS, t0, Tk));
  be.attentionForward(out, lse, q, kc, vc, B, Tq, Tk, Tcap, NH, NKV, HS);
  assertClose(
    `out rows ${t0}..${Tk - 1}`,
    down(out),
    rows(f.f32("out"), B, T, NH * HS, t0, Tk),
    FWD,
  );
  assertClose(
    `lse rows ${t0}..${Tk - 1}`,
    down(lse),
    rows(f.f32("lse"), B * NH, T, 1, t0, Tk),
    FWD,
  );
}

Deno.test("attentionForward() decoding T=1 against a KV cache (Tk=7, Tcap=9) matches full attention", () => {
  checkCachedAttention("ops_attention", 7, 9, 5, 6);
});

Deno.test("attentionForward() on a 2-token chunk against a KV cache (Tk=7, Tcap=9) matches full attention", () => {
  checkCachedAttention("ops_attention", 7, 9, 5, 5);
});

Deno.test("attentionForward() on 67 queries against a KV cache (Tk=70, Tcap=72) crosses row blocks", () => {
  checkCachedAttention("ops_attention_long", 70, 72, 60, 3);
  checkCachedAttention("ops_attention_long", 70, 72, 69, 69);
});

Deno.test("kvCacheWrite() throws TuneError when the cache is full", () => {
  throws(() => be.kvCacheWrite(zeros(4), zeros(2), 1, 2, 2, 2, 1), TuneError);
});

Deno.test("swigluForward()/swigluBackward() match silu(gate) * up, with aliased grads", () => {
  const f = loadFixture("ops_swiglu");
  const n = f.meta<number>("n");
  const gate = up(f.f32("gate")), upb = up(f.f32("up")), out = zeros(n);
  be.swigluForward(out, gate, upb, n);
  assertClose("out", down(out), f.f32("out"), FWD);
  const dgate = zeros(n), dup = zeros(n);
  be.swigluBackward(dgate, dup, up(f.f32("dout")), gate, upb, n);
  assertClose("dgate", down(dgate), f.f32("dgate"), GRAD);
  assertClose("dup", down(dup), f.f32("dup"), GRAD);
  // dgate/dup may alias gate/up.
  be.swigluBackward(gate, upb, up(f.f32("dout")), gate, upb, n);
  assertClose("dgate aliased", down(gate), f.f32("dgate"), GRAD);
  assertClose("dup aliased", down(upb), f.f32("dup"), GRAD);
});

Deno.test("crossEntropy() matches F.cross_entropy(ignore_index=-100) and its mean gradient", () => {
  const f = loadFixture("ops_cross_entropy");
  const [N, V, valid] = [f.meta<number>("N"), f.meta<number>("V"), f.meta<number>("valid")];
  const logits = up(f.f32("logits")), targets = up(f.i32("targets"));
  const losses = zeros(N), dlogits = zeros(N * V);
  be.crossEntropy(losses, null, logits, targets, N, V, 1);
  assertClose("losses (no grad)", down(losses), f.f32("losses"), FWD);
  be.crossEntropy(losses, dlogits, logits, targets, N, V, 1 / valid);
  assertClose("losses", down(losses), f.f32("losses"), FWD);
  assertClose("mean loss", [be.sum(losses) / valid], f.f32("loss"), FWD);
  assertClose("dlogits", down(dlogits), f.f32("dlogits"), GRAD);
  // Fused in place: the gradient overwrites the logits.
  be.crossEntropy(losses, logits, logits, targets, N, V, 1 / valid);
  assertClose("losses in place", down(losses), f.f32("losses"), FWD);
  assertClose("dlogits in place", down(logits), f.f32("dlogits"), GRAD);
});

Deno.test("crossEntropy() throws TuneError when a target is outside the vocabulary", () => {
  throws(
    () => be.crossEntropy(zeros(1), null, zeros(3), up(new Int32Array([3])), 1, 3, 1),
    TuneError,
  );
});

Deno.test("adamw() follows torch.optim.AdamW for 3 steps", () => {
  const f = loadFixture("ops_adamw");
  const n = f.meta<number>("n");
  const hp = {
    lr: f.meta<number>("lr"),
    beta1: f.meta<number>("beta1"),
    beta2: f.meta<number>("beta2"),
    eps: f.meta<number>("eps"),
    weightDecay: f.meta<number>("weightDecay"),
  };
  const p = up(f.f32("params0")), m = zeros(n), v = zeros(n);
  for (let s = 0; s < f.meta<number>("steps"); s++) {
    be.adamw(p, up(f.f32(`grad${s}`)), m, v, { ...hp, step: s + 1 });
    assertClose(`params step ${s + 1}`, down(p), f.f32(`params${s + 1}`), FWD);
    assertClose(`m step ${s + 1}`, down(m), f.f32(`m${s + 1}`), FWD);
    assertClose(`v step ${s + 1}`, down(v), f.f32(`v${s + 1}`), FWD);
  }
});

Deno.test("dropoutMask() reproduces the documented hash exactly and drops about p", () => {
  const f = loadFixture("ops_dropout");
  const n = f.meta<number>("n");
  for (const tag of ["a", "b"]) {
    const p = f.meta<number>(`p_${tag}`);
    const mask = zeros(n);
    be.dropoutMask(mask, p, f.meta<number>(`seed_${tag}`));
    const got = down(mask);
    deepStrictEqual(Array.from(got), Array.from(f.f32(`mask_${tag}`)));
    const dropped = got.filter((x) => x === 0).length / n;
    ok(Math.abs(dropped - p) < 0.05, `dropped fraction ${dropped} for p ${p}`);
  }
  const a = zeros(64), b = zeros(64);
  be.dropoutMask(a, 0.5, 1);
  be.dropoutMask(b, 0.5, 2);
  ok(down(a).some((x, i) => x !== down(b)[i]), "different seeds give different masks");
  throws(() => be.dropoutMask(a, 1, 1), TuneError);
});

Deno.test("elementwise ops, sum and sumSquares agree with float64 references", () => {
  const n = 1003;
  const xa = lcgFloats(n, 1), xb = lcgFloats(n, 2);
  const a = up(xa), b = up(xb), out = zeros(n);
  be.add(out, a, b);
  assertClose("add", down(out), xa.map((x, i) => x + xb[i]), FWD);
  be.mul(out, a, b);
  assertClose("mul", down(out), xa.map((x, i) => x * xb[i]), FWD);
  be.copy(out, a);
  be.axpy(out, b, -0.5);
  assertClose("axpy", down(out), xa.map((x, i) => x - 0.5 * xb[i]), FWD);
  be.scale(out, 3);
  assertClose("scale", down(out), xa.map((x, i) => 3 * (x - 0.5 * xb[i])), FWD);
  be.add(a, a, b); // out aliases a
  assertClose("add aliased", down(a), xa.map((x, i) => x + xb[i]), FWD);
  let s = 0, ss = 0;
  for (const x of xb) {
    s += x;
    ss += x * x;
  }
  assertClose("sum", [be.sum(b)], [s], { atol: 1e-9, rtol: 1e-12 });
  assertClose("sumSquares", [be.sumSquares(b)], [ss], { atol: 1e-9, rtol: 1e-12 });
});

Deno.test("view(), upload(), download() (also into an array), copy() and bytesInUse() track memory exactly", () => {
  const local = new CpuBackend();
  equal(local.bytesInUse(), 0);
  const buf = local.alloc(10);
  const ids = local.alloc(4, "i32");
  equal(local.bytesInUse(), 56);
  const v = local.view(buf, 3, 4);
  local.upload(v, new Float32Array([1, 2, 3, 4]));
  local.upload(buf, new Float32Array([9]), 9);
  deepStrictEqual(Array.from(local.download(buf)), [0, 0, 0, 1, 2, 3, 4, 0, 0, 9]);
  local.fill(local.view(buf, 0, 2), -1);
  equal(local.sum(buf), 17);
  local.upload(ids, new Int32Array([5, -100, 7, 8]));
  deepStrictEqual(Array.from(local.download(ids)), [5, -100, 7, 8]);
  const into = new Int32Array(4);
  equal(local.download(ids, into), into); // into the caller's array (a decode loop's logits)
  deepStrictEqual(Array.from(into), [5, -100, 7, 8]);
  throws(() => local.download(ids, new Float32Array(4)), /download into a Float32Array of 4/);
  throws(() => local.download(buf, new Float32Array(9)), /the buffer holds 10 float values/);
  local.free(v); // views need no release
  equal(local.bytesInUse(), 56);
  local.free(buf);
  local.free(buf);
  equal(local.bytesInUse(), 16);
  throws(() => local.view(ids, 2, 3));
  equal(local.scratchBytes(), 0); // no op has run on this backend yet
});

Deno.test("upload() into a bf16 buffer rounds to nearest-even bfloat16", () => {
  const b = be.alloc(4, "bf16");
  be.upload(b, new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -9, -3.14159, 1e-3]));
  const got = down(b);
  deepStrictEqual(Array.from(got.subarray(0, 3)), [1, 1 + 2 ** -7, -3.140625]);
  ok(Math.abs(got[3] - 1e-3) < 1e-3 / 128, "bf16 keeps 8 bits of mantissa");
});
