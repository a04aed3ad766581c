/**
 * The op interface: the one contract between model code and devices.
 *
 * Dimension letters, named once (as in llm.c):
 *   B  batch            T  sequence length (queries)    Tk  key/value length
 *   C  model dim        H  feed-forward hidden dim      V   vocabulary size
 *   NH query heads      NKV key/value heads             HS  head size (C = NH * HS usually)
 *   N  rows (B*T)       M, K, N in matmul docs are the usual GEMM sizes.
 *
 * Conventions every backend follows:
 * - Buffers are row-major, contiguous, and created only by `alloc` (or `view` of one).
 *   Nothing allocates behind the caller's back.
 * - Parameter gradients (dweight, dbias, dtable) always ACCUMULATE (`+=`), so gradient
 *   accumulation over micro-batches is free. Activation gradients accumulate or are
 *   written as each method states.
 * - Token ids and targets live in `i32` buffers; -100 in a target means "ignore".
 * - `out` may alias an input only where a method says so.
 * - On the CPU everything is fp32. On CUDA, activations and weights may be bf16 with
 *   fp32 accumulation; optimizer state and master weights are fp32.
 */

/** Element type of a device buffer. */
export type DType = "f32" | "bf16" | "i32";

/** An opaque device buffer: a backend only accepts buffers it made. */
export interface DeviceBuffer {
  /** Number of elements. */
  readonly length: number;
  readonly dtype: DType;
}

/** Rotary embedding layouts: Meta/llama2.c pair (2i, 2i+1); Hugging Face pairs (i, i+HS/2). */
export type RopeLayout = "interleaved" | "half";

/** AdamW hyper-parameters for one step (PyTorch's `torch.optim.AdamW` semantics). */
export interface AdamWParams {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step count, used for bias correction. */
  step: number;
}

/**
 * A frozen NF4 weight W(N, K) on a device (torchao's NF4Tensor, see src/quant/nf4.ts): 4-bit
 * codes of blocks of 64 elements, int8 block scalers double-quantized in groups of 256.
 * The bytes ride in i32 buffers, little-endian (element e holds bytes 4e..4e+3).
 */
export interface Nf4Weight {
  /** Rows N (output features). */
  readonly rows: number;
  /** Columns K (input features); rows * cols is a multiple of 16384. */
  readonly cols: number;
  /** Arithmetic of the dequantization: the dtype the checkpoint tensor was quantized in. */
  readonly dtype: "f32" | "bf16";
  /** (N*K/8) i32: the packed codes, element 2k in the high nibble of byte k. */
  readonly codes: DeviceBuffer;
  /** (N*K/256) i32: the int8 block scalers, one byte per block of 64 elements. */
  readonly scalers: DeviceBuffer;
  /** (N*K/16384) f32: one factor per group of 256 blocks. */
  readonly factors: DeviceBuffer;
  /** Mean of the block absmaxes (added back to every dequantized scaler). */
  readonly mean: number;
}

/**
 * Collectives across the processes of one job. On one process every method is a no-op
 * (or a plain copy), so single-device code can call them unconditionally.
 * Buffers are on the backend's device; sums are elementwise.
 */
export interface Collectives {
  readonly rank: number;
  readonly worldSize: number;
  /** buf = sum over ranks of buf. */
  allReduceSum(buf: DeviceBuffer): Promise<void>;
  /** out(n) = slice `rank` of sum over ranks of inp(worldSize * n). */
  reduceScatterSum(out: DeviceBuffer, inp: DeviceBuffer): Promise<void>;
  /** out(worldSize * n) = concatenation over ranks of inp(n). */
  allGather(out: DeviceBuffer, inp: DeviceBuffer): Promise<void>;
  /** buf = buf of rank `root`. */
  broadcast(buf: DeviceBuffer, root: number): Promise<void>;
  barrier(): Promise<void>;
}

/** Weights of one decoder layer for a fused decoder (views of the model's buffers). */
export interface DecoderLayerSpec {
  saNorm: DeviceBuffer; // (C)
  wq: DeviceBuffer; // (NH*HS, C)
  wk: DeviceBuffer; // (NKV*HS, C)
  wv: DeviceBuffer; // (NKV*HS, C)
  bq: DeviceBuffer | null; // (NH*HS)
  bk: DeviceBuffer | null; // (NKV*HS)
  bv: DeviceBuffer | null; // (NKV*HS)
  wo: DeviceBuffer; // (C, NH*HS)
  mlpNorm: DeviceBuffer; // (C)
  w1: DeviceBuffer; // (H, C) gate
  w2: DeviceBuffer; // (C, H) down
  w3: DeviceBuffer; // (H, C) up
  k: DeviceBuffer; // (B, capacity, NKV*HS) KV cache
  v: DeviceBuffer; // (B, capacity, NKV*HS)
}

/**
 * A plain Llama decoder (SwiGLU, RMSNorm without offset, fp32, no adapters) for a fused
 * decode step: the buffers are read in place at every step, never copied.
 */
export interface DecoderSpec {
  B: number;
  capacity: number;
  C: number;
  NH: number;
  NKV: number;
  HS: number;
  H: number;
  V: number;
  eps: number;
  layout: RopeLayout;
  tokEmb: DeviceBuffer; // (V, C)
  layers: DecoderLayerSpec[];
  norm: DeviceBuffer; // (C)
  output: DeviceBuffer; // (V, C)
  cos: DeviceBuffer; // (Tmax, HS/2)
  sin: DeviceBuffer; // (Tmax, HS/2)
  logits: DeviceBuffer; // (B, V) written by each step
}

/** A decode step fused into one call (see Backend.createDecoder). */
export interface FusedDecoder {
  /**
   * One token per sequence (B) at cache position `pos`: writes the new keys and values
   * into the caches and the logits (B, V), exactly as the op-by-op decode would. With
   * `live` (B), sequences whose entry is 0 are finished: their attention and cache writes
   * are skipped and their logits are unspecified; the other rows are unchanged by it.
   */
  step(tokens: Int32Array, pos: number, live?: Uint8Array): void;
  /**
   * Cache rows [0, rows) of every sequence were written by the op-by-op path (a prefill);
   * a decoder that keeps its own copy of the caches rereads them.
   */
  cachesWritten?(rows: number): void;
}

/**
 * A variant of causal attention (Mistral's sliding window, Gemma 2's soft-capped scores).
 * With scale a and soft-cap c a query/key score is c * tanh(a * q.k / c) (a * q.k without c);
 * with window W the query at position p sees keys p - W + 1..p only.
 */
export interface AttentionVariant {
  /** Sliding window W in positions (0 or absent: none). */
  window?: number;
  /** Logit soft-cap c (0 or absent: none). */
  softcap?: number;
  /** Score scale a (absent: 1/sqrt(HS)). */
  scale?: number;
}

/**
 * The last parameters of attentionForward and of attentionBackward, which takes the
 * forward's: NH query heads, NKV key/value heads of size HS, the mask's optional `segments`
 * and `variant` (see attentionForward), and `probs`: a buffer of
 * `attentionProbsSize(B, T, NH)` floats in which a training forward keeps its softmax
 * probabilities for the backward, which then does not recompute them (null or absent:
 * recomputed from lse; only for backends with attentionProbsSize, never with a soft-cap).
 */
export type AttentionHeads = [
  NH: number,
  NKV: number,
  HS: number,
  segments?: DeviceBuffer | null,
  variant?: AttentionVariant | null,
  probs?: DeviceBuffer | null,
];

/**
 * The rotation of a rope call after its x, cos and sin: x is (B, T, NH, HS), token t sits at
 * position pos + t, pairs as `layout` says, `inverse` rotates back (see Backend.rope; the CPU
 * kernel takes the same).
 */
export type RopeSizes = [
  B: number,
  T: number,
  NH: number,
  HS: number,
  pos: number,
  layout: RopeLayout,
  inverse: boolean,
];

/** Checks `download`'s destination: the buffer's kind (i32 or float) and length. */
export function checkInto(into: Float32Array | Int32Array, i32: boolean, length: number): void {
  if ((into instanceof Int32Array) !== i32 || into.length !== length) {
    throw new Error(
      `download into a ${into.constructor.name} of ${into.length}: the buffer holds ${length} ` +
        `${i32 ? "i32" : "float"} values`,
    );
  }
}

/** True when a variant changes nothing (absent, or no window, cap or scale set). */
export function plainAttention(v: AttentionVariant | null | undefined): boolean {
  return !v || (!(v.window ?? 0) && !(v.softcap ?? 0) && v.scale === undefined);
}

/**
 * The parameters of the gated activations' backward ops (swigluBackward, gegluBackward):
 * dgate(n), dup(n) written from dout(n) and the forward's gate(n), up(n).
 */
export type GatedBackwardArgs = [
  dgate: DeviceBuffer,
  dup: DeviceBuffer,
  dout: DeviceBuffer,
  gate: DeviceBuffer,
  up: DeviceBuffer,
  n: number,
];

/** A compute device: memory plus the fused layer ops of a Llama-family transformer. */
export interface Backend {
  readonly name: "cpu" | "cuda";
  /** Dtype used for activations and weights on this backend ("f32" on the CPU). */
  readonly computeDtype: DType;
  readonly collectives: Collectives;

  /**
   * Optional: a fused decode step over `spec` (same results as the op-by-op decode, with
   * less per-token overhead); null or absent where the backend has none.
   */
  createDecoder?(spec: DecoderSpec): FusedDecoder | null;

  // ---- memory -------------------------------------------------------------------------
  /** A new zero-filled buffer of `length` elements. */
  alloc(length: number, dtype?: DType): DeviceBuffer;
  /** A view of `length` elements of `buf` starting at element `offset` (no copy). */
  view(buf: DeviceBuffer, offset: number, length: number): DeviceBuffer;
  /** Copy host data into `dst` starting at element `dstOffset` (converts f32 -> bf16). */
  upload(dst: DeviceBuffer, src: Float32Array | Int32Array, dstOffset?: number): void;
  /**
   * Copy a buffer to the host (bf16 is widened to f32): into `into` when given (an array of
   * the buffer's kind and length, returned; a decode loop reads its logits this way with no
   * allocation per token), else into a new array.
   */
  download(src: DeviceBuffer, into?: Float32Array | Int32Array): Float32Array | Int32Array;
  /** Every element of `buf` = value. */
  fill(buf: DeviceBuffer, value: number): void;
  /** dst = src (same length; converts between f32 and bf16 when dtypes differ). */
  copy(dst: DeviceBuffer, src: DeviceBuffer): void;
  /** Release a buffer made by `alloc` (views need no release). */
  free(buf: DeviceBuffer): void;
  /** Wait until all queued work is done. */
  sync(): void;
  /** Bytes currently held by live `alloc` buffers (for memory reports). */
  bytesInUse(): number;

  // ---- elementwise --------------------------------------------------------------------
  /** out(n) = a(n) + b(n). out may alias a or b. */
  add(out: DeviceBuffer, a: DeviceBuffer, b: DeviceBuffer): void;
  /** out(n) = a(n) * b(n). out may alias a or b. */
  mul(out: DeviceBuffer, a: DeviceBuffer, b: DeviceBuffer): void;
  /** out(n) += alpha * x(n). */
  axpy(out: DeviceBuffer, x: DeviceBuffer, alpha: number): void;
  /** buf(n) *= s. */
  scale(buf: DeviceBuffer, s: number): void;
  /**
   * buf(n) = cap * tanh(buf / cap) in place (Gemma 2's final logit soft-cap). Optional: a
   * backend without it refuses soft-capped models.
   */
  softcap?(buf: DeviceBuffer, cap: number): void;
  /** dbuf(n) *= 1 - (y / cap)^2, y(n) being softcap's output: the soft-cap's backward. */
  softcapBackward?(dbuf: DeviceBuffer, y: DeviceBuffer, cap: number): void;
  /** Sum of all elements, returned to the host (synchronizes). */
  sum(buf: DeviceBuffer): number;
  /** Sum of squares of all elements, returned to the host (for gradient norms). */
  sumSquares(buf: DeviceBuffer): number;
  /**
   * Dropout mask: mask(n) = 0 with probability p, else 1/(1-p), from a counter-based
   * generator keyed by (seed, element index) so every backend draws the same mask.
   * Apply with `mul`; the backward pass is the same `mul`. The exact generator (32-bit
   * integer hash, threshold floor(p * 2^32), index relative to `mask`) is defined in
   * src/backend/cpu/dropout.ts; p must be in [0, 1) and seed an integer (low 32 bits used).
   */
  dropoutMask(mask: DeviceBuffer, p: number, seed: number): void;

  // ---- layers -------------------------------------------------------------------------
  /**
   * out(M, N) = inp(M, K) @ weight(N, K)^T + bias(N).
   * With `accumulate`, out += instead of out =.
   */
  matmulForward(
    out: DeviceBuffer,
    inp: DeviceBuffer,
    weight: DeviceBuffer,
    bias: DeviceBuffer | null,
    M: number,
    K: number,
    N: number,
    accumulate?: boolean,
  ): void;
  /**
   * Backward of matmulForward; every non-null output ACCUMULATES:
   * dinp(M, K) += dout(M, N) @ weight(N, K); dweight(N, K) += dout^T @ inp;
   * dbias(N) += sum over rows of dout.
   */
  matmulBackward(
    dinp: DeviceBuffer | null,
    dweight: DeviceBuffer | null,
    dbias: DeviceBuffer | null,
    dout: DeviceBuffer,
    inp: DeviceBuffer,
    weight: DeviceBuffer,
    M: number,
    K: number,
    N: number,
  ): void;

  /**
   * out(N, C) = table(V, C)[tokens(N)]. `hostTokens`, when the caller has them: the same N
   * ids on the host (a GPU backend then checks and orders them without a download, which
   * would wait for the queued work).
   */
  embeddingForward(
    out: DeviceBuffer,
    tokens: DeviceBuffer,
    table: DeviceBuffer,
    N: number,
    C: number,
    hostTokens?: Int32Array,
  ): void;
  /** dtable(V, C)[tokens[i]] += dout(N, C)[i]  (accumulates). `hostTokens` as above. */
  embeddingBackward(
    dtable: DeviceBuffer,
    dout: DeviceBuffer,
    tokens: DeviceBuffer,
    N: number,
    C: number,
    hostTokens?: Int32Array,
  ): void;

  /** out(N, C) = inp * rstd * weight(C), rstd(N) = 1/sqrt(mean(inp^2) + eps) is saved. */
  rmsnormForward(
    out: DeviceBuffer,
    rstd: DeviceBuffer,
    inp: DeviceBuffer,
    weight: DeviceBuffer,
    N: number,
    C: number,
    eps: number,
  ): void;
  /** dinp(N, C) += ..., dweight(C) += ... (both accumulate; dweight may be null). */
  rmsnormBackward(
    dinp: DeviceBuffer,
    dweight: DeviceBuffer | null,
    dout: DeviceBuffer,
    inp: DeviceBuffer,
    weight: DeviceBuffer,
    rstd: DeviceBuffer,
    N: number,
    C: number,
  ): void;

  /**
   * Rotary embedding on x(B, T, NH, HS), in place. Token t of every batch row sits at
   * position `pos + t`; cos/sin(Tmax, HS/2) are the precomputed tables (frequency i of
   * position p at [p * HS/2 + i]). `inverse` rotates by the negative angle, which is the
   * backward pass (the rotation is orthogonal).
   * `positions` (B, T) i32, when given, overrides `pos + t`: token t of batch row b sits at
   * position positions[b * T + t] (`pos` is ignored). Packed samples restart their
   * positions this way (torchtune's `input_pos`).
   * `rotaryDims` RD (even, <= HS; default HS): only the first RD dims of each head rotate, the
   * rest pass through (partial rotary); the tables are then (Tmax, RD/2) and the pairs are
   * those of the layout within the first RD dims.
   */
  rope(
    x: DeviceBuffer,
    cos: DeviceBuffer,
    sin: DeviceBuffer,
    ...a: [...RopeSizes, positions?: DeviceBuffer | null, rotaryDims?: number]
  ): void;

  /**
   * Causal attention with grouped-query heads, scale 1/sqrt(HS).
   * q(B, T, NH, HS); k, v(B, Tcap, NKV, HS) of which the first Tk rows are valid;
   * query t sits at position Tk - T + t and sees keys 0..Tk-T+t (Tk = T when training,
   * Tk > T when decoding against a KV cache of capacity Tcap).
   * out(B, T, NH, HS) is written; lse(B, NH, T) saves each row's log-sum-exp for backward.
   * Query head h reads key/value head floor(h / (NH / NKV)).
   * `segments` (B, T) i32, when given (training only: Tk = Tcap = T), makes the mask
   * block-causal for packed samples: query t sees key j only if j <= t and
   * segments[b, j] == segments[b, t].
   * `variant` (window, soft-cap, scale; Mistral and Gemma 2) changes the mask and scores:
   * see AttentionVariant. Null or absent: the plain causal attention above.
   */
  attentionForward(
    out: DeviceBuffer,
    lse: DeviceBuffer,
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    B: number,
    T: number,
    Tk: number,
    Tcap: number,
    ...heads: AttentionHeads
  ): void;
  /**
   * Floats of the `probs` buffer (AttentionHeads) for a training attention of B sequences of
   * T tokens and NH query heads. Absent: the backend does not keep probabilities (its
   * backward recomputes them).
   */
  attentionProbsSize?(B: number, T: number, NH: number): number;
  /**
   * Backward of attentionForward for training (Tk = Tcap = T). dq, dk, dv are WRITTEN
   * (shapes of q, k, v); out and lse are the forward's; `segments` and `variant` must be
   * the forward's.
   */
  attentionBackward(
    dq: DeviceBuffer,
    dk: DeviceBuffer,
    dv: DeviceBuffer,
    dout: DeviceBuffer,
    q: DeviceBuffer,
    k: DeviceBuffer,
    v: DeviceBuffer,
    out: DeviceBuffer,
    lse: DeviceBuffer,
    B: number,
    T: number,
    ...heads: AttentionHeads
  ): void;

  /**
   * Write rows into a KV cache: cache(B, Tcap, NKV*HS)[b, pos + t] = src(B, T, NKV*HS)[b, t].
   */
  kvCacheWrite(
    cache: DeviceBuffer,
    src: DeviceBuffer,
    B: number,
    T: number,
    Tcap: number,
    width: number,
    pos: number,
  ): void;

  /** out(N, H) = silu(gate(N, H)) * up(N, H). out may alias neither input. */
  swigluForward(out: DeviceBuffer, gate: DeviceBuffer, up: DeviceBuffer, n: number): void;
  /** dgate(n), dup(n) are WRITTEN from dout(n). dgate/dup may alias gate/up. */
  swigluBackward(...a: GatedBackwardArgs): void;

  /**
   * out(N, H) = gelu_tanh(gate(N, H)) * up(N, H) (GeGLU, Gemma's MLP), with torch's tanh
   * approximation 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))). out may alias neither input.
   */
  gegluForward(out: DeviceBuffer, gate: DeviceBuffer, up: DeviceBuffer, n: number): void;
  /** dgate(n), dup(n) are WRITTEN from dout(n) (backward of gegluForward). dgate/dup may alias gate/up. */
  gegluBackward(...a: GatedBackwardArgs): void;

  /**
   * Cross-entropy of logits(N, V) against targets(N) (i32, -100 = ignore).
   * losses(N) is written: -log softmax(logits)[target], 0 for ignored rows.
   * If dlogits is given it is WRITTEN: (softmax - onehot(target)) * gradScale, zero rows
   * for ignored targets. dlogits may alias logits (the gradient overwrites the logits).
   * `hostTargets`: the same N targets on the host, when the caller has them (see
   * embeddingForward).
   */
  crossEntropy(
    losses: DeviceBuffer,
    dlogits: DeviceBuffer | null,
    logits: DeviceBuffer,
    targets: DeviceBuffer,
    N: number,
    V: number,
    gradScale: number,
    hostTargets?: Int32Array,
  ): void;

  /**
   * Cross-entropy against a mix of the hard targets and a teacher's distribution, for
   * knowledge distillation (torchtune's CE + ForwardKLLoss at kd_ratio r), per row of
   * logits(N, V) with targets(N) (i32, -100 = ignore) and teacherLogits(N, V):
   *   losses(N)   = -log softmax(logits)[target]                (the class loss)
   *   kdLosses(N) = -sum_v softmax(teacherLogits)_v log softmax(logits)_v   (the KD loss)
   * both 0 for ignored rows. If dlogits is given it is WRITTEN:
   *   (softmax(logits) - (1 - r) onehot(target) - r softmax(teacherLogits)) * gradScale,
   * the gradient of ((1 - r) losses + r kdLosses) * gradScale; zero rows for ignored
   * targets. dlogits may alias logits. `hostTargets` as in crossEntropy.
   */
  distillCrossEntropy(
    losses: DeviceBuffer,
    kdLosses: DeviceBuffer,
    dlogits: DeviceBuffer | null,
    logits: DeviceBuffer,
    teacherLogits: DeviceBuffer,
    targets: DeviceBuffer,
    N: number,
    V: number,
    kdRatio: number,
    gradScale: number,
    hostTargets?: Int32Array,
  ): void;

  // ---- DoRA (weight-decomposed LoRA) --------------------------------------------------
  /**
   * Row norms of an adapted weight: norm(O)[o] = sqrt(sum_i (w[o, i] + s * ba[o, i])^2) and
   * scale(O)[o] = magnitude[o] / norm[o]. w (O, I) may be bf16 (a frozen base); ba (O, I),
   * magnitude, norm and scale are fp32. Sums accumulate in fp32 (fp64 on the CPU).
   */
  doraNorm(
    scale: DeviceBuffer,
    norm: DeviceBuffer,
    w: DeviceBuffer,
    ba: DeviceBuffer,
    magnitude: DeviceBuffer,
    s: number,
    O: number,
    I: number,
  ): void;
  /** out(N, C)[n, c] = inp[n, c] * v(C)[c]; out may alias inp; v is fp32. */
  scaleColumns(
    out: DeviceBuffer,
    inp: DeviceBuffer,
    v: DeviceBuffer,
    N: number,
    C: number,
  ): void;
  /**
   * Magnitude gradient of DoRA (accumulates): dmag(C)[c] += (sum over n of
   * dout(N, C)[n, c] * z(N, C)[n, c]) / norm(C)[c]. dmag and norm are fp32.
   */
  doraMagnitudeBackward(
    dmag: DeviceBuffer,
    dout: DeviceBuffer,
    z: DeviceBuffer,
    norm: DeviceBuffer,
    N: number,
    C: number,
  ): void;

  // ---- NF4 base weights (QLoRA) ------------------------------------------------------
  /**
   * out(rows, K) = rows [row0, row0 + rows) of W dequantized: level(code) * (scaler /
   * factor + mean), each step rounded to w.dtype (bitwise torchao's get_original_weight).
   */
  nf4Dequantize(out: DeviceBuffer, w: Nf4Weight, row0: number, rows: number): void;
  /**
   * out(M, N) = inp(M, K) @ W(N, K)^T + bias(N) for an NF4 W (accumulate: out +=), without
   * holding more than a tile of W dequantized.
   */
  nf4MatmulForward(
    out: DeviceBuffer,
    inp: DeviceBuffer,
    w: Nf4Weight,
    bias: DeviceBuffer | null,
    M: number,
    accumulate?: boolean,
  ): void;
  /** Input gradient of nf4MatmulForward (accumulates): dinp(M, K) += dout(M, N) @ W(N, K). */
  nf4MatmulBackward(dinp: DeviceBuffer, dout: DeviceBuffer, w: Nf4Weight, M: number): void;

  // ---- optimizer ----------------------------------------------------------------------
  /**
   * One AdamW step over n = params.length elements (decoupled weight decay, bias
   * correction, PyTorch semantics): params, m, v are updated in place from grads.
   */
  adamw(
    params: DeviceBuffer,
    grads: DeviceBuffer,
    m: DeviceBuffer,
    v: DeviceBuffer,
    hp: AdamWParams,
  ): void;
}

/** The names of the Backend's methods (its ops, memory functions included). */
export type OpName = {
  [K in keyof Backend]-?: NonNullable<Backend[K]> extends (...a: never[]) => unknown ? K : never;
}[keyof Backend];

/**
 * The parameters of op `K` as the Backend interface above declares them: the one place an
 * op's parameter types, order and documentation live. Implementations take
 * `...a: OpArgs<"rope">` (the CUDA layer functions `(ctx, ...a: OpArgs<"rope">)`) and
 * destructure `a` in one line, defaults included.
 */
export type OpArgs<K extends OpName> = NonNullable<Backend[K]> extends (...a: infer A) => unknown
  ? A
  : never;

/** Collectives for a single process: everything is a no-op or a copy. */
export class SingleProcessCollectives implements Collectives {
  readonly rank = 0;
  readonly worldSize = 1;
  constructor(private readonly copy: (dst: DeviceBuffer, src: DeviceBuffer) => void) {}
  allReduceSum(_buf: DeviceBuffer): Promise<void> {
    return Promise.resolve();
  }
  reduceScatterSum(out: DeviceBuffer, inp: DeviceBuffer): Promise<void> {
    this.copy(out, inp);
    return Promise.resolve();
  }
  allGather(out: DeviceBuffer, inp: DeviceBuffer): Promise<void> {
    this.copy(out, inp);
    return Promise.resolve();
  }
  broadcast(_buf: DeviceBuffer, _root: number): Promise<void> {
    return Promise.resolve();
  }
  barrier(): Promise<void> {
    return Promise.resolve();
  }
}
