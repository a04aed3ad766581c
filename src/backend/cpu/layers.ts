/**
 * TypeScript kernels of the CPU backend's row-wise layers: embedding, RMSNorm, rotary
 * embedding, SwiGLU, cross-entropy and the KV-cache write. They take raw typed arrays;
 * the backend checks sizes before calling.
 */
import { expPoly, fastExp, LN2_HI, LN2_LO, LOG2E, MAGIC, POW2 } from "./fast_math.ts";
import { type GatedBackwardKernel, type GatedForwardKernel, simdKernels } from "./simd.ts";
import { TuneError } from "../../errors.ts";
import type { RopeSizes } from "../ops.ts";

/** out(N, C) = table(V, C)[tokens(N)]. */
export function embeddingForward(
  out: Float32Array,
  tokens: Int32Array,
  table: Float32Array,
  N: number,
  C: number,
): void {
  const V = (table.length / C) | 0;
  for (let i = 0; i < N; i++) {
    const t = tokens[i];
    if (t < 0 || t >= V) {
      throw new TuneError(
        `token id ${t} at position ${i} is outside the vocabulary 0..${V - 1}; ` +
          `check that the tokenizer matches the model`,
      );
    }
    out.set(table.subarray(t * C, t * C + C), i * C);
  }
}

/** dtable(V, C)[tokens[i]] += dout(N, C)[i]. */
export function embeddingBackward(
  dtable: Float32Array,
  dout: Float32Array,
  tokens: Int32Array,
  N: number,
  C: number,
): void {
  for (let i = 0; i < N; i++) {
    const t = tokens[i] * C;
    const o = i * C;
    for (let c = 0; c < C; c++) dtable[t + c] += dout[o + c];
  }
}

/** out(N, C) = inp * rstd * weight; rstd(N) = 1 / sqrt(mean(inp^2) + eps). */
export function rmsnormForward(
  out: Float32Array,
  rstd: Float32Array,
  inp: Float32Array,
  weight: Float32Array,
  N: number,
  C: number,
  eps: number,
): void {
  for (let i = 0; i < N; i++) {
    const o = i * C;
    let ss = 0;
    for (let c = 0; c < C; c++) {
      const x = inp[o + c];
      ss += x * x;
    }
    // Round rstd to fp32 first so forward and backward use the same saved value.
    const r = Math.fround(1 / Math.sqrt(ss / C + eps));
    rstd[i] = r;
    for (let c = 0; c < C; c++) out[o + c] = inp[o + c] * r * weight[c];
  }
}

/**
 * Backward of rmsnormForward, accumulating:
 * dinp += rstd * (w * dout) - rstd^3 / C * inp * sum(dout * w * inp); dweight += dout * inp * rstd.
 */
export function rmsnormBackward(
  dinp: Float32Array,
  dweight: Float32Array | null,
  dout: Float32Array,
  inp: Float32Array,
  weight: Float32Array,
  rstd: Float32Array,
  N: number,
  C: number,
): void {
  for (let i = 0; i < N; i++) {
    const o = i * C;
    const r = rstd[i];
    let dot = 0;
    for (let c = 0; c < C; c++) dot += dout[o + c] * weight[c] * inp[o + c];
    const k = (r * r * r * dot) / C;
    for (let c = 0; c < C; c++) {
      dinp[o + c] += r * weight[c] * dout[o + c] - k * inp[o + c];
    }
    if (dweight !== null) {
      for (let c = 0; c < C; c++) dweight[c] += dout[o + c] * inp[o + c] * r;
    }
  }
}

/**
 * Rotary embedding in place on x(B, T, NH, HS); token t at position pos + t.
 * cos/sin(Tmax, HS/2). Pairs are (2i, 2i+1) for "interleaved", (i, i + HS/2) for "half".
 */
export function rope(
  x: Float32Array,
  cos: Float32Array,
  sin: Float32Array,
  ...a: [...RopeSizes, positions?: Int32Array | null, RD?: number]
): void {
  // positions (B, T) override pos + t; RD: the rotated leading dims of each head (partial
  // rotary), the tables then (Tmax, RD/2)
  const [B, T, NH, HS, pos, layout, inverse, positions = null, RD = HS] = a;
  const half = RD >> 1;
  const sign = inverse ? -1 : 1;
  // Element offsets of a pair's first and second member relative to the head start.
  const stride0 = layout === "interleaved" ? 2 : 1;
  const second = layout === "interleaved" ? 1 : half;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const tab = (positions === null ? pos + t : positions[b * T + t]) * half;
      for (let h = 0; h < NH; h++) {
        const base = ((b * T + t) * NH + h) * HS;
        for (let i = 0; i < half; i++) {
          const c = cos[tab + i];
          const s = sign * sin[tab + i];
          const j = base + i * stride0;
          const x0 = x[j];
          const x1 = x[j + second];
          x[j] = x0 * c - x1 * s;
          x[j + second] = x0 * s + x1 * c;
        }
      }
    }
  }
}

/** 1 + e^-g with fastExp's steps (for the SwiGLU loops; V8 inlines this one and expPoly). */
function onePlusExpNeg(g: number): number {
  const y = -g;
  let e: number;
  if (y >= -745.2 && y <= 709.7) {
    const kf = (y * LOG2E + MAGIC) - MAGIC;
    e = expPoly((y - kf * LN2_HI) - kf * LN2_LO) * POW2[(kf | 0) + 1075];
  } else e = y > 0 ? Infinity : y < 0 ? 0 : y; // NaN stays NaN
  return 1 + e;
}

/** out(n) = silu(gate) * up, silu(g) = g / (1 + exp(-g)). */
export function swigluForward(...[out, gate, up, n]: GatedForwardKernel): void {
  const simd = simdKernels(); // wasm SIMD for the even-length head, bitwise the same
  const head = simd === null ? 0 : n & ~1;
  if (head > 0) simd!.swigluForward(out, gate, up, head);
  swigluForwardScalar(out, gate, up, head, n);
}

/**
 * Elements [from, n) of swigluForward in scalar code (the decode step's small rows use it
 * directly: no wasm instance to start, the same bits).
 */
export function swigluForwardScalar(
  out: Float32Array,
  gate: Float32Array,
  up: Float32Array,
  from: number,
  n: number,
): void {
  for (let i = from; i < n; i++) {
    const g = gate[i];
    out[i] = (g / onePlusExpNeg(g)) * up[i];
  }
}

/** dgate = dout * up * silu'(gate), dup = dout * silu(gate); written, may alias gate/up. */
export function swigluBackward(...[dgate, dup, dout, gate, up, n]: GatedBackwardKernel): void {
  const simd = simdKernels(); // wasm SIMD for the even-length head, bitwise the same
  const head = simd === null ? 0 : n & ~1;
  if (head > 0) simd!.swigluBackward(dgate, dup, dout, gate, up, head);
  for (let i = head; i < n; i++) {
    const g = gate[i];
    const u = up[i];
    const d = dout[i];
    const sig = 1 / onePlusExpNeg(g);
    dgate[i] = d * u * sig * (1 + g * (1 - sig));
    dup[i] = d * g * sig;
  }
}

/** sqrt(2 / pi) and the cubic coefficient of the tanh approximation of GELU (PyTorch's). */
const GELU_BETA = Math.sqrt(2 / Math.PI);
const GELU_KAPPA = 0.044715;

/**
 * out(n) = gelu_tanh(gate) * up (Gemma's GeGLU), gelu_tanh(g) =
 * 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) as torch's `F.gelu(g, approximate="tanh")`;
 * computed in float64, rounded once on store.
 */
export function gegluForward(...[out, gate, up, n]: GatedForwardKernel): void {
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    const t = Math.tanh(GELU_BETA * (g + GELU_KAPPA * g * g * g));
    out[i] = 0.5 * g * (1 + t) * up[i];
  }
}

/**
 * dgate = dout * up * gelu_tanh'(gate), dup = dout * gelu_tanh(gate); written, may alias
 * gate/up (each element is read before it is written). The derivative is torch's
 * GeluBackward (tanh): 0.5 (1 + t) + 0.5 g (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 g^2).
 */
export function gegluBackward(...[dgate, dup, dout, gate, up, n]: GatedBackwardKernel): void {
  for (let i = 0; i < n; i++) {
    const g = gate[i];
    const u = up[i];
    const d = dout[i];
    const t = Math.tanh(GELU_BETA * (g + GELU_KAPPA * g * g * g));
    const dgelu = 0.5 * (1 + t) +
      0.5 * g * (1 - t * t) * GELU_BETA * (1 + 3 * GELU_KAPPA * g * g);
    dgate[i] = d * u * dgelu;
    dup[i] = d * 0.5 * g * (1 + t);
  }
}

/** targets[i]: -100 (ignore) or a class in 0..V-1, else a one-line error naming the row. */
function targetAt(targets: Int32Array, i: number, V: number): number {
  const tgt = targets[i];
  if (tgt !== -100 && (tgt < 0 || tgt >= V)) {
    throw new TuneError(
      `target id ${tgt} at row ${i} is outside 0..${V - 1} (or -100 to ` +
        `ignore); check the dataset's labels against the model's vocabulary`,
    );
  }
  return tgt;
}

/**
 * losses(N) = logsumexp(logits) - logits[target] (0 where target = -100); dlogits, when
 * given, is written as (softmax - onehot) * gradScale and may alias logits.
 */
export function crossEntropy(
  losses: Float32Array,
  dlogits: Float32Array | null,
  logits: Float32Array,
  targets: Int32Array,
  N: number,
  V: number,
  gradScale: number,
): void {
  for (let i = 0; i < N; i++) {
    const o = i * V;
    const tgt = targetAt(targets, i, V);
    if (tgt === -100) {
      losses[i] = 0;
      if (dlogits !== null) dlogits.fill(0, o, o + V);
      continue;
    }
    // Row max with two running maxima (shorter dependency chain). With the wasm SIMD
    // kernels (bitwise the same) the even-length head of the row is copied into their
    // memory and its maxima, exps and scaling run there; the loops here do the rest.
    const end = o + V;
    const simd = dlogits === null ? null : simdKernels();
    const head = simd === null ? 0 : V & ~1;
    let m0 = -Infinity, m1 = -Infinity;
    if (head > 0) [m0, m1] = simd!.loadRowMax(logits, o, head);
    let j = o + head;
    for (; j + 1 < end; j += 2) {
      const a = logits[j], b = logits[j + 1];
      if (a > m0) m0 = a;
      if (b > m1) m1 = b;
    }
    if (j < end && logits[j] > m0) m0 = logits[j];
    const max = m0 > m1 ? m0 : m1;
    const target = logits[o + tgt]; // read before dlogits may overwrite it
    let sum = 0;
    if (dlogits === null) {
      for (j = o; j < end; j++) sum += fastExp(logits[j] - max);
      losses[i] = max + Math.log(sum) - target;
      continue;
    }
    // One exp per element: store exp(x - max) in dlogits (reading x first, so aliasing
    // is safe), then scale by gradScale / sum. The exp is fastExp's, inlined (x - max <= 0),
    // with 0 below -708 (fp32 0 either way) so that the wasm SIMD rows match it bitwise.
    if (head > 0) sum = simd!.expSum(head, max);
    for (j = o + head; j < end; j++) {
      const y = logits[j] - max;
      let e = 0;
      if (y >= -708) {
        const kf = (y * LOG2E + MAGIC) - MAGIC;
        e = expPoly((y - kf * LN2_HI) - kf * LN2_LO) * POW2[(kf | 0) + 1075];
      } else if (y !== y) e = y; // NaN stays NaN
      dlogits[j] = e;
      sum += e;
    }
    losses[i] = max + Math.log(sum) - target;
    const s = gradScale / sum;
    if (head > 0) simd!.scaleTo(dlogits, o, head, s);
    for (j = o + head; j < end; j++) dlogits[j] *= s;
    dlogits[o + tgt] -= gradScale;
  }
}

/**
 * Knowledge-distillation cross-entropy (the op contract in ops.ts): losses(N) the class
 * loss, kdLosses(N) the cross-entropy against softmax(teacher), dlogits (may alias logits)
 * (softmax - (1 - r) onehot - r softmax(teacher)) * gradScale. Float64 sums per row.
 */
export function distillCrossEntropy(
  losses: Float32Array,
  kdLosses: Float32Array,
  dlogits: Float32Array | null,
  logits: Float32Array,
  teacher: Float32Array,
  targets: Int32Array,
  N: number,
  V: number,
  kdRatio: number,
  gradScale: number,
): void {
  for (let i = 0; i < N; i++) {
    const o = i * V, end = o + V;
    const tgt = targetAt(targets, i, V);
    if (tgt === -100) {
      losses[i] = 0;
      kdLosses[i] = 0;
      if (dlogits !== null) dlogits.fill(0, o, end);
      continue;
    }
    let ms = -Infinity, mt = -Infinity;
    for (let j = o; j < end; j++) {
      if (logits[j] > ms) ms = logits[j];
      if (teacher[j] > mt) mt = teacher[j];
    }
    let ss = 0, st = 0, cross = 0;
    for (let j = o; j < end; j++) {
      ss += fastExp(logits[j] - ms);
      const e = fastExp(teacher[j] - mt);
      st += e;
      cross += e * logits[j];
    }
    const lse = ms + Math.log(ss);
    const xt = logits[o + tgt]; // read before dlogits may overwrite it
    losses[i] = lse - xt;
    kdLosses[i] = lse - cross / st; // -sum q log p = lse - sum q x, as sum q = 1
    if (dlogits === null) continue;
    const a = gradScale / ss, b = kdRatio * gradScale / st;
    for (let j = o; j < end; j++) {
      dlogits[j] = fastExp(logits[j] - ms) * a - fastExp(teacher[j] - mt) * b;
    }
    dlogits[o + tgt] -= (1 - kdRatio) * gradScale;
  }
}

/** cache(B, Tcap, width)[b, pos + t] = src(B, T, width)[b, t]. */
export function kvCacheWrite(
  cache: Float32Array,
  src: Float32Array,
  B: number,
  T: number,
  Tcap: number,
  width: number,
  pos: number,
): void {
  for (let b = 0; b < B; b++) {
    const s = b * T * width;
    cache.set(src.subarray(s, s + T * width), (b * Tcap + pos) * width);
  }
}
