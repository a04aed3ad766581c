/**
 * The CPU backend: fp32 compute on host typed arrays, matrix products through OpenBLAS
 * (or TypeScript kernels when OpenBLAS is missing or `TUNE_CPU_MATMUL=ts`). It is the
 * numerical oracle for the CUDA backend.
 */
import { openBlas } from "../../../ffi/openblas.ts";
import { TuneError } from "../../errors.ts";
import {
  type AttentionVariant,
  type Backend,
  checkInto,
  type Collectives,
  type DecoderSpec,
  type DeviceBuffer,
  type DType,
  type FusedDecoder,
  type OpArgs,
  plainAttention,
  SingleProcessCollectives,
} from "../ops.ts";
import { type AttentionDims, attentionUnits, probsFloats } from "./attention.ts";
import { CpuBuffer, roundArrayBf16, roundBf16 } from "./buffer.ts";
import { CpuDecoder } from "./decode.ts";
import { dropoutFill } from "./dropout.ts";
import { Gemm, gemmAddresses } from "./gemm.ts";
import { nf4Dequantize, nf4MatmulBackward, nf4MatmulForward } from "./nf4_ops.ts";
import * as layers from "./layers.ts";
import { allShared, CpuPool, type PoolJob, runJob } from "./pool.ts";
import { CMD_GEMM } from "./pool_spin.ts";
import { Scratch } from "./scratch.ts";

/** Options of the CPU backend. */
export interface CpuBackendOptions {
  /**
   * "blas" uses OpenBLAS (TypeScript when it cannot be opened), "ts" forces the TypeScript
   * kernels. Default: env TUNE_CPU_MATMUL ("ts" or "blas"), else "blas".
   */
  matmul?: "blas" | "ts";
  /** Collectives for multi-process runs; default: single process. */
  collectives?: Collectives;
}

/** Float64 scratch slot of the bias-gradient sums (N). */
const SLOT64_ACC = 0;
/**
 * Elementwise calls at least this large (logits for cross-entropy, elements otherwise) are
 * split across two threads (pool.ts); smaller ones are not worth a message round trip.
 */
const POOL_MIN_LOGITS = 1 << 21;
const POOL_MIN_ELEMENTS = 1 << 18;
/** Attention calls with at least this many B*NH*T*Tk scores are split across two threads. */
const POOL_MIN_SCORES = 1 << 20;

function envMatmul(): "blas" | "ts" {
  let v: string | undefined;
  try {
    v = Deno.env.get("TUNE_CPU_MATMUL");
  } catch {
    v = undefined;
  }
  if (v === undefined || v === "" || v === "blas") return "blas";
  if (v === "ts") return "ts";
  throw new TuneError(`TUNE_CPU_MATMUL=${v} is not a matmul path; use "blas" or "ts"`);
}

/** The host buffer behind a DeviceBuffer, checking that this backend made it. */
function buf(b: DeviceBuffer): CpuBuffer {
  if (!(b instanceof CpuBuffer)) throw new Error("buffer was not made by the CPU backend");
  return b;
}

function f32(b: DeviceBuffer, need: number, what: string): Float32Array {
  const c = buf(b);
  if (c.dtype === "i32") throw new Error(`${what}: expected a float buffer, got i32`);
  if (c.data.length < need) {
    throw new Error(`${what}: buffer has ${c.data.length} elements, needs ${need}`);
  }
  return c.data as Float32Array;
}

function i32(b: DeviceBuffer, need: number, what: string): Int32Array {
  const c = buf(b);
  if (c.dtype !== "i32") throw new Error(`${what}: expected an i32 buffer, got ${c.dtype}`);
  if (c.data.length < need) {
    throw new Error(`${what}: buffer has ${c.data.length} elements, needs ${need}`);
  }
  return c.data as Int32Array;
}

/** Exactly the first n elements of a float buffer. */
function f32n(b: DeviceBuffer, n: number, what: string): Float32Array {
  const a = f32(b, n, what);
  return a.length === n ? a : a.subarray(0, n);
}

/** A Backend on the host CPU. */
export class CpuBackend implements Backend {
  readonly name = "cpu" as const;
  readonly computeDtype: DType = "f32";
  readonly collectives: Collectives;
  /** Which matrix-product path is in use: "blas" (OpenBLAS) or "ts". */
  readonly matmulPath: "blas" | "ts";
  private readonly gemm: Gemm;
  private readonly scratch = new Scratch();
  private liveBytes = 0;
  #poolState: CpuPool | null | undefined;
  /** The products of this backend's pool jobs, run on this thread (runJob of pool.ts). */
  readonly #gemmOf = (): Gemm => this.gemm;

  constructor(opts: CpuBackendOptions = {}) {
    const want = opts.matmul ?? envMatmul();
    const blas = want === "blas" ? openBlas() : null;
    this.matmulPath = blas ? "blas" : "ts";
    this.gemm = new Gemm(blas, this.scratch);
    // A split product's second half runs on the pool's worker through its spinning hand-off
    // (a decode step may split several), handed the operands' addresses: they may lie in a
    // decoder's wasm arena, which a worker cannot share. Not arrays of a few elements: V8 may
    // keep those on its heap, where a collection moves them.
    this.gemm.split = (near, far) => {
      const pool = this.#pool([]);
      const [, , , A, , B, , C] = far;
      if (pool === null || [A, B, C].some((x) => x.buffer.byteLength < 1024)) {
        near();
        return false;
      }
      const at = gemmAddresses(...far);
      return pool.spin((args) => {
        args[0] = CMD_GEMM;
        for (let i = 0; i < at.length; i++) args[1 + i] = Number(at[i]);
      }, near);
    };
    this.collectives = opts.collectives ??
      new SingleProcessCollectives((dst, src) => this.copy(dst, src));
  }

  /** The fused decode step of decode.ts (on this backend's matrix-product path). */
  createDecoder(spec: DecoderSpec): FusedDecoder {
    return new CpuDecoder(this.gemm, spec);
  }

  // ---- memory -------------------------------------------------------------------------

  alloc(length: number, dtype: DType = "f32"): DeviceBuffer {
    if (!Number.isInteger(length) || length < 0) {
      throw new Error(`alloc: length ${length} is not a non-negative integer`);
    }
    // Shared memory, so the pool's second thread can work on the same buffers.
    const sab = new SharedArrayBuffer(length * 4);
    const data = dtype === "i32" ? new Int32Array(sab) : new Float32Array(sab);
    this.liveBytes += data.byteLength;
    return new CpuBuffer(dtype, data, true);
  }

  view(b: DeviceBuffer, offset: number, length: number): DeviceBuffer {
    const c = buf(b);
    if (offset < 0 || length < 0 || offset + length > c.data.length) {
      throw new Error(`view [${offset}, ${offset + length}) is outside a buffer of ${c.length}`);
    }
    return new CpuBuffer(c.dtype, c.data.subarray(offset, offset + length), false);
  }

  upload(dst: DeviceBuffer, src: Float32Array | Int32Array, dstOffset = 0): void {
    const d = buf(dst);
    if (dstOffset < 0 || dstOffset + src.length > d.data.length) {
      throw new Error(`upload of ${src.length} at ${dstOffset} overflows a buffer of ${d.length}`);
    }
    if ((d.dtype === "i32") !== (src instanceof Int32Array)) {
      throw new Error(`upload: ${src.constructor.name} into a ${d.dtype} buffer`);
    }
    if (d.dtype === "bf16") {
      roundArrayBf16((d.data as Float32Array).subarray(dstOffset, dstOffset + src.length), src);
    } else {
      d.data.set(src, dstOffset);
    }
  }

  download(src: DeviceBuffer, into?: Float32Array | Int32Array): Float32Array | Int32Array {
    const data = buf(src).data;
    if (into === undefined) return data.slice();
    checkInto(into, data instanceof Int32Array, data.length);
    into.set(data);
    return into;
  }

  fill(b: DeviceBuffer, value: number): void {
    const c = buf(b);
    c.data.fill(c.dtype === "bf16" ? roundBf16(value) : value);
  }

  copy(dst: DeviceBuffer, src: DeviceBuffer): void {
    const d = buf(dst), s = buf(src);
    if (d.length !== s.length) throw new Error(`copy: lengths ${d.length} != ${s.length}`);
    if ((d.dtype === "i32") !== (s.dtype === "i32")) {
      throw new Error(`copy: ${s.dtype} into ${d.dtype}`);
    }
    if (d.dtype === "bf16" && s.dtype !== "bf16") {
      roundArrayBf16(d.data as Float32Array, s.data);
    } else {
      d.data.set(s.data);
    }
  }

  free(b: DeviceBuffer): void {
    const c = buf(b);
    if (!c.owned) return;
    this.liveBytes -= c.data.byteLength;
    c.owned = false; // a second free is then a no-op, not a double count
  }

  sync(): void {}

  bytesInUse(): number {
    return this.liveBytes;
  }

  /** Bytes of the backend's reusable scratch (not counted in bytesInUse). */
  scratchBytes(): number {
    return this.scratch.bytes();
  }

  // ---- elementwise --------------------------------------------------------------------

  add(out: DeviceBuffer, a: DeviceBuffer, b: DeviceBuffer): void {
    const n = out.length;
    const o = f32(out, n, "add"), x = f32(a, n, "add a"), y = f32(b, n, "add b");
    for (let i = 0; i < n; i++) o[i] = x[i] + y[i];
  }

  mul(out: DeviceBuffer, a: DeviceBuffer, b: DeviceBuffer): void {
    const n = out.length;
    const o = f32(out, n, "mul"), x = f32(a, n, "mul a"), y = f32(b, n, "mul b");
    for (let i = 0; i < n; i++) o[i] = x[i] * y[i];
  }

  axpy(out: DeviceBuffer, x: DeviceBuffer, alpha: number): void {
    const n = out.length;
    const o = f32(out, n, "axpy"), a = f32(x, n, "axpy x");
    for (let i = 0; i < n; i++) o[i] += alpha * a[i];
  }

  scale(b: DeviceBuffer, s: number): void {
    const o = f32(b, 0, "scale");
    const n = o.length;
    for (let i = 0; i < n; i++) o[i] *= s;
  }

  softcap(b: DeviceBuffer, cap: number): void {
    const o = f32(b, 0, "softcap");
    for (let i = 0; i < o.length; i++) o[i] = Math.tanh(o[i] / cap) * cap;
  }

  softcapBackward(db: DeviceBuffer, y: DeviceBuffer, cap: number): void {
    const d = f32(db, 0, "softcap grad"), v = f32(y, d.length, "softcap out");
    for (let i = 0; i < d.length; i++) {
      const t = v[i] / cap;
      d[i] *= 1 - t * t;
    }
  }

  doraNorm(...a: OpArgs<"doraNorm">): void {
    const [scale, norm, w, ba, magnitude, s, O, I] = a;
    const g = f32(scale, O, "doraNorm scale"), nrm = f32(norm, O, "doraNorm norm");
    const W = f32(w, O * I, "doraNorm w"), L = f32(ba, O * I, "doraNorm ba");
    const m = f32(magnitude, O, "doraNorm magnitude");
    const sf = Math.fround(s);
    for (let o = 0; o < O; o++) {
      let acc = 0; // float64 accumulation of fp32 elements
      for (let i = o * I, e = i + I; i < e; i++) {
        const v = Math.fround(W[i] + Math.fround(sf * L[i]));
        acc += v * v;
      }
      nrm[o] = Math.sqrt(acc);
      g[o] = m[o] / nrm[o];
    }
  }

  scaleColumns(...[out, inp, v, N, C]: OpArgs<"scaleColumns">): void {
    const o = f32(out, N * C, "scaleColumns"), x = f32(inp, N * C, "scaleColumns inp");
    const c = f32(v, C, "scaleColumns v");
    for (let n = 0; n < N; n++) {
      const r = n * C;
      for (let j = 0; j < C; j++) o[r + j] = x[r + j] * c[j];
    }
  }

  doraMagnitudeBackward(...[dmag, dout, z, norm, N, C]: OpArgs<"doraMagnitudeBackward">): void {
    const d = f32(dmag, C, "doraMagnitudeBackward dmag");
    const dy = f32(dout, N * C, "doraMagnitudeBackward dout");
    const zz = f32(z, N * C, "doraMagnitudeBackward z");
    const nrm = f32(norm, C, "doraMagnitudeBackward norm");
    const acc = new Float64Array(C);
    for (let n = 0; n < N; n++) {
      const r = n * C;
      for (let j = 0; j < C; j++) acc[j] += dy[r + j] * zz[r + j];
    }
    for (let j = 0; j < C; j++) d[j] += acc[j] / nrm[j];
  }

  sum(b: DeviceBuffer): number {
    const a = buf(b).data;
    let s = 0; // float64 accumulation
    for (let i = 0; i < a.length; i++) s += a[i];
    return s;
  }

  sumSquares(b: DeviceBuffer): number {
    const a = buf(b).data;
    let s = 0; // float64 accumulation
    for (let i = 0; i < a.length; i++) s += a[i] * a[i];
    return s;
  }

  dropoutMask(mask: DeviceBuffer, p: number, seed: number): void {
    if (!(p >= 0 && p < 1)) throw new TuneError(`dropout probability ${p} must be in [0, 1)`);
    if (!Number.isInteger(seed)) throw new TuneError(`dropout seed ${seed} must be an integer`);
    dropoutFill(f32(mask, 0, "dropoutMask"), p, seed);
  }

  // ---- layers -------------------------------------------------------------------------

  matmulForward(...a: OpArgs<"matmulForward">): void {
    const [out, inp, weight, bias, M, K, N, accumulate = false] = a;
    const o = f32(out, M * N, "matmul out"); // (M, N)
    const x = f32(inp, M * K, "matmul inp"); // (M, K)
    const w = f32(weight, N * K, "matmul weight"); // (N, K)
    let beta = accumulate ? 1 : 0;
    if (bias !== null) {
      const bb = f32(bias, N, "matmul bias"); // (N)
      // Put the bias into out first, then accumulate the product on top of it.
      for (let i = 0; i < M; i++) {
        const r = i * N;
        if (beta === 0) { for (let j = 0; j < N; j++) o[r + j] = bb[j]; }
        else for (let j = 0; j < N; j++) o[r + j] += bb[j];
      }
      beta = 1;
    }
    if (K === 0) {
      if (beta === 0) o.fill(0, 0, M * N);
      return;
    }
    this.gemm.nt(M, N, K, x, K, w, K, o, N, beta);
  }

  matmulBackward(...a: OpArgs<"matmulBackward">): void {
    const [dinp, dweight, dbias, dout, inp, weight, M, K, N] = a;
    const dy = f32(dout, M * N, "matmul dout"); // (M, N)
    if (dinp !== null) {
      const dx = f32(dinp, M * K, "matmul dinp"); // (M, K)
      const w = f32(weight, N * K, "matmul weight"); // (N, K)
      if (N > 0) this.gemm.nn(M, K, N, dy, N, w, K, dx, K, 1);
    }
    if (dweight !== null) {
      const dw = f32(dweight, N * K, "matmul dweight"); // (N, K)
      const x = f32(inp, M * K, "matmul inp"); // (M, K)
      if (M > 0) this.gemm.tn(N, K, M, dy, N, x, K, dw, K, 1);
    }
    if (dbias !== null) {
      const db = f32(dbias, N, "matmul dbias"); // (N)
      const acc = this.scratch.get64(SLOT64_ACC, N);
      acc.fill(0);
      for (let i = 0; i < M; i++) {
        const r = i * N;
        for (let j = 0; j < N; j++) acc[j] += dy[r + j];
      }
      for (let j = 0; j < N; j++) db[j] += acc[j];
    }
  }

  embeddingForward(...[out, tokens, table, N, C]: OpArgs<"embeddingForward">): void {
    layers.embeddingForward(
      f32(out, N * C, "embedding out"),
      i32(tokens, N, "embedding tokens"),
      f32(table, 0, "embedding table"),
      N,
      C,
    );
  }

  embeddingBackward(...[dtable, dout, tokens, N, C]: OpArgs<"embeddingBackward">): void {
    layers.embeddingBackward(
      f32(dtable, 0, "embedding dtable"),
      f32(dout, N * C, "embedding dout"),
      i32(tokens, N, "embedding tokens"),
      N,
      C,
    );
  }

  rmsnormForward(...[out, rstd, inp, weight, N, C, eps]: OpArgs<"rmsnormForward">): void {
    layers.rmsnormForward(
      f32(out, N * C, "rmsnorm out"),
      f32(rstd, N, "rmsnorm rstd"),
      f32(inp, N * C, "rmsnorm inp"),
      f32(weight, C, "rmsnorm weight"),
      N,
      C,
      eps,
    );
  }

  rmsnormBackward(...a: OpArgs<"rmsnormBackward">): void {
    const [dinp, dweight, dout, inp, weight, rstd, N, C] = a;
    layers.rmsnormBackward(
      f32(dinp, N * C, "rmsnorm dinp"),
      dweight === null ? null : f32(dweight, C, "rmsnorm dweight"),
      f32(dout, N * C, "rmsnorm dout"),
      f32(inp, N * C, "rmsnorm inp"),
      f32(weight, C, "rmsnorm weight"),
      f32(rstd, N, "rmsnorm rstd"),
      N,
      C,
    );
  }

  rope(...a: OpArgs<"rope">): void {
    const [x, cos, sin, B, T, NH, HS, pos, layout, inverse, positions = null, RD = HS] = a;
    if (RD % 2 !== 0 || RD < 2 || RD > HS) {
      throw new Error(`rope: rotary dims ${RD} must be even and within head size ${HS}`);
    }
    const p = positions === null ? null : i32(positions, B * T, "rope positions"); // (B, T)
    let maxPos = pos + T - 1;
    if (p !== null) {
      maxPos = 0;
      for (let i = 0; i < B * T; i++) {
        if (p[i] < 0) throw new TuneError(`rope position ${p[i]} is negative; check input_pos`);
        if (p[i] > maxPos) maxPos = p[i];
      }
    }
    const need = (maxPos + 1) * (RD / 2);
    const c = f32(cos, 0, "rope cos");
    if (c.length < need) {
      throw new TuneError(
        `sequence position ${maxPos} is beyond the rotary table of ` +
          `${c.length / (RD / 2)} positions; raise max_seq_len`,
      );
    }
    layers.rope(
      f32(x, B * T * NH * HS, "rope x"),
      c,
      f32(sin, need, "rope sin"),
      B,
      T,
      NH,
      HS,
      pos,
      layout,
      inverse,
      p,
      RD,
    );
  }

  attentionForward(...args: OpArgs<"attentionForward">): void {
    const [out, lse, q, k, v, B, T, Tk, Tcap, ...heads] = args;
    const [NH, NKV, HS, segments = null, variant = null, keep = null] = heads;
    const probs = keptProbs(keep, B, T, NH);
    if (NH % NKV !== 0) throw new Error(`attention: NH ${NH} is not a multiple of NKV ${NKV}`);
    if (Tk < T || Tk > Tcap) throw new Error(`attention: need T ${T} <= Tk ${Tk} <= Tcap ${Tcap}`);
    if (segments !== null && Tk !== T) {
      throw new Error(`attention: segments need Tk = T (got T ${T}, Tk ${Tk}): no KV cache`);
    }
    const seg = segments === null ? null : i32(segments, B * T, "attention segments"); // (B, T)
    const d = { B, T, Tk, Tcap, NH, NKV, HS, seg, ...variantDims(variant), probs };
    const a = {
      out: f32(out, B * T * NH * HS, "attention out"),
      lse: f32(lse, B * NH * T, "attention lse"),
      q: f32(q, B * T * NH * HS, "attention q"),
      k: f32(k, B * Tcap * NKV * HS, "attention k"),
      v: f32(v, B * Tcap * NKV * HS, "attention v"),
    };
    const part = (u0: number, u1: number): PoolJob => {
      return { kind: "attentionForward", matmul: this.matmulPath, a, d, u0, u1 };
    };
    this.#attention([...Object.values(a), probs], B * NH * T * Tk, attentionUnits(d), part);
  }

  attentionProbsSize(B: number, T: number, NH: number): number {
    return probsFloats(B, T, NH);
  }

  /**
   * Run units [0, U) of an attention pass over `scores` (query, key) pairs (#halves: on two
   * threads when the pass is large enough and its buffers are shared), with one OpenBLAS
   * thread per side meanwhile.
   */
  #attention(
    buffers: readonly (Float32Array | null)[],
    scores: number,
    U: number,
    part: (u0: number, u1: number) => PoolJob,
  ): void {
    const pool = U > 1 && scores >= POOL_MIN_SCORES ? this.#pool(buffers) : null;
    if (pool === null) {
      this.#halves(null, U, part);
      return;
    }
    this.gemm.maxThreads = 1;
    try {
      this.#halves(pool, U, part);
    } finally {
      this.gemm.maxThreads = Infinity;
      // The worker set the process-wide OpenBLAS thread count: resynchronise our cache.
      this.gemm.blas?.setThreads(1, true);
    }
  }

  attentionBackward(...args: OpArgs<"attentionBackward">): void {
    const [dq, dk, dv, dout, q, k, v, out, lse, ...dims] = args;
    const [B, T, NH, NKV, HS, segments = null, variant = null, keep = null] = dims;
    const probs = keptProbs(keep, B, T, NH);
    if (NH % NKV !== 0) throw new Error(`attention: NH ${NH} is not a multiple of NKV ${NKV}`);
    const nq = B * T * NH * HS, nkv = B * T * NKV * HS;
    const seg = segments === null ? null : i32(segments, B * T, "attention segments"); // (B, T)
    const d = { B, T, Tk: T, Tcap: T, NH, NKV, HS, seg, ...variantDims(variant), probs };
    const a = {
      dq: f32n(dq, nq, "attention dq"),
      dk: f32n(dk, nkv, "attention dk"),
      dv: f32n(dv, nkv, "attention dv"),
      dout: f32(dout, nq, "attention dout"),
      q: f32(q, nq, "attention q"),
      k: f32(k, nkv, "attention k"),
      v: f32(v, nkv, "attention v"),
      out: f32(out, nq, "attention out"),
      lse: f32(lse, B * NH * T, "attention lse"),
    };
    const part = (u0: number, u1: number): PoolJob => {
      return { kind: "attentionBackward", matmul: this.matmulPath, a, d, u0, u1 };
    };
    this.#attention([...Object.values(a), probs], B * NH * T * T, attentionUnits(d), part);
  }

  kvCacheWrite(...[cache, src, B, T, Tcap, width, pos]: OpArgs<"kvCacheWrite">): void {
    if (pos < 0 || pos + T > Tcap) {
      throw new TuneError(
        `KV cache of ${Tcap} positions cannot hold positions ${pos}..` +
          `${pos + T - 1}; raise max_seq_len or shorten the prompt`,
      );
    }
    layers.kvCacheWrite(
      f32(cache, B * Tcap * width, "kv cache"),
      f32(src, B * T * width, "kv src"),
      B,
      T,
      Tcap,
      width,
      pos,
    );
  }

  swigluForward(...[out, gate, up, n]: OpArgs<"swigluForward">): void {
    const o = f32n(out, n, "swiglu out"), g = f32n(gate, n, "swiglu gate");
    const u = f32n(up, n, "swiglu up");
    const pool = n >= POOL_MIN_ELEMENTS ? this.#pool([o, g, u]) : null;
    this.#halves(pool, n, (i0, i1) => {
      const [out, gate, up] = [o, g, u].map((x) => x.subarray(i0, i1));
      return { kind: "swigluForward", out, gate, up };
    });
  }

  /** The pool when it is running and every array is shared, else null. */
  #pool(arrays: readonly (Float32Array | Int32Array | null)[]): CpuPool | null {
    if (this.#poolState === undefined) this.#poolState = CpuPool.get();
    return this.#poolState !== null && allShared(arrays) ? this.#poolState : null;
  }

  /**
   * Run a kernel over n parts (elements, rows or attention units), `part(i0, i1)` being the
   * job of parts [i0, i1): all here when `pool` is null, else [0, n/2) here while the pool's
   * worker runs [n/2, n) (here too if the worker failed).
   */
  #halves(pool: CpuPool | null, n: number, part: (i0: number, i1: number) => PoolJob): void {
    if (pool === null) {
      runJob(part(0, n), this.scratch, this.#gemmOf);
      return;
    }
    const mid = n >> 1;
    const far = part(mid, n);
    if (!pool.run(far, () => runJob(part(0, mid), this.scratch, this.#gemmOf))) {
      runJob(far, this.scratch, this.#gemmOf);
    }
  }

  swigluBackward(...[dgate, dup, dout, gate, up, n]: OpArgs<"swigluBackward">): void {
    const dg = f32n(dgate, n, "swiglu dgate"), du = f32n(dup, n, "swiglu dup");
    const d = f32n(dout, n, "swiglu dout"), g = f32n(gate, n, "swiglu gate");
    const u = f32n(up, n, "swiglu up");
    const pool = n >= POOL_MIN_ELEMENTS ? this.#pool([dg, du, d, g, u]) : null;
    this.#halves(pool, n, (i0, i1) => {
      const [dgate, dup, dout, gate, up] = [dg, du, d, g, u].map((x) => x.subarray(i0, i1));
      return { kind: "swigluBackward", dgate, dup, dout, gate, up };
    });
  }

  gegluForward(...[out, gate, up, n]: OpArgs<"gegluForward">): void {
    const o = f32n(out, n, "geglu out"), g = f32n(gate, n, "geglu gate");
    const u = f32n(up, n, "geglu up");
    layers.gegluForward(o, g, u, n);
  }

  gegluBackward(...[dgate, dup, dout, gate, up, n]: OpArgs<"gegluBackward">): void {
    const dg = f32n(dgate, n, "geglu dgate"), du = f32n(dup, n, "geglu dup");
    const d = f32n(dout, n, "geglu dout"), g = f32n(gate, n, "geglu gate");
    const u = f32n(up, n, "geglu up");
    layers.gegluBackward(dg, du, d, g, u, n);
  }

  crossEntropy(...a: OpArgs<"crossEntropy">): void {
    const [losses, dlogits, logits, targets, N, V, gradScale] = a;
    const l = f32(losses, N, "cross-entropy losses");
    const dl = dlogits === null ? null : f32(dlogits, N * V, "cross-entropy dlogits");
    const x = f32(logits, N * V, "cross-entropy logits");
    const t = i32(targets, N, "cross-entropy targets");
    const pool = N > 1 && N * V >= POOL_MIN_LOGITS ? this.#pool([l, dl, x, t]) : null;
    this.#halves(pool, N, (r0, r1) => ({
      kind: "crossEntropy",
      losses: l.subarray(r0, r1),
      dlogits: dl === null ? null : dl.subarray(r0 * V, r1 * V),
      logits: x.subarray(r0 * V, r1 * V),
      targets: t.subarray(r0, r1),
      V,
      gradScale,
    }));
  }

  distillCrossEntropy(...a: OpArgs<"distillCrossEntropy">): void {
    const [losses, kdLosses, dlogits, logits, teacherLogits, targets, ...rest] = a;
    const [N, V, kdRatio, gradScale] = rest;
    layers.distillCrossEntropy(
      f32(losses, N, "distillation losses"),
      f32(kdLosses, N, "distillation KD losses"),
      dlogits === null ? null : f32(dlogits, N * V, "distillation dlogits"),
      f32(logits, N * V, "distillation logits"),
      f32(teacherLogits, N * V, "distillation teacher logits"),
      i32(targets, N, "distillation targets"),
      N,
      V,
      kdRatio,
      gradScale,
    );
  }

  // ---- NF4 base weights (QLoRA): src/backend/cpu/nf4_ops.ts ----------------------------

  nf4Dequantize(...a: OpArgs<"nf4Dequantize">): void {
    nf4Dequantize(...a);
  }

  nf4MatmulForward(...a: OpArgs<"nf4MatmulForward">): void {
    const [out, inp, w, bias, M, accumulate = false] = a;
    nf4MatmulForward(this.gemm, this.scratch, out, inp, w, bias, M, accumulate);
  }

  nf4MatmulBackward(...a: OpArgs<"nf4MatmulBackward">): void {
    nf4MatmulBackward(this.gemm, this.scratch, ...a);
  }

  // ---- optimizer ----------------------------------------------------------------------

  adamw(...[params, grads, m, v, hp]: OpArgs<"adamw">): void {
    const n = params.length;
    const p = f32n(params, n, "adamw params"), g = f32n(grads, n, "adamw grads");
    const mm = f32n(m, n, "adamw m"), vv = f32n(v, n, "adamw v");
    const pool = n >= POOL_MIN_ELEMENTS ? this.#pool([p, g, mm, vv]) : null;
    this.#halves(pool, n, (i0, i1) => {
      const [params, grads, m, v] = [p, g, mm, vv].map((x) => x.subarray(i0, i1));
      return { kind: "adamw", params, grads, m, v, hp };
    });
  }
}

/** The kept-probabilities array of an attention call (AttentionHeads' probs), or null. */
function keptProbs(probs: DeviceBuffer | null, B: number, T: number, NH: number) {
  return probs === null ? null : f32(probs, probsFloats(B, T, NH), "attention probs");
}

/** The window/soft-cap/scale fields of attention dims (none for a plain attention). */
function variantDims(v: AttentionVariant | null): Partial<AttentionDims> {
  if (plainAttention(v)) return {};
  const out: Partial<AttentionDims> = {};
  if (v!.window) out.window = v!.window;
  if (v!.softcap) out.softcap = v!.softcap;
  if (v!.scale !== undefined) out.scale = v!.scale;
  return out;
}
