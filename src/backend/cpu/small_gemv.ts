/**
 * Decode attention's matrix-vector products in wasm SIMD (kernels.ll `gemv_rows`,
 * `gemv_cols`): `Gemm` sends the strided M = 1 products with N * K <= SMALL_GEMV_WASM here
 * (`gemvInWasm`), from the op-by-op path and the fused decoder alike, so both give the same
 * bits, and the fused decoder can run all heads of a sequence in one wasm call
 * (`attnDecode`: scores, softmax and values, no per-head FFI call or TypeScript loop).
 *
 * Operands must lie in the instance's wasm memory. A `scratch` instance (one per thread,
 * `Gemm`'s) copies the ones that do not in and the result out, and grows as needed; an
 * arena instance (the fused decoder's) has a fixed size, hands out its resident buffers
 * with `alloc` and never grows, so they stay valid; it can also run the attention and
 * SwiGLU exps of kernels.ll on them (`expRow`, `swiglu`: the bits of the scalar loops).
 */
import {
  ATTN_TABLE_BYTES,
  kernelModule,
  SWIGLU_TABLE_BYTES,
  writeAttnTable,
  writeSwigluTable,
} from "./simd.ts";
import { MAX_PAGES, sharedKernelModule } from "./shared_module.ts";

/** Bytes `addExpTables` takes from an arena. */
export const ARENA_TABLE_BYTES = ATTN_TABLE_BYTES + SWIGLU_TABLE_BYTES;

/** Largest N * K of an M = 1 product that runs in wasm (a 256 KB weight). */
export const SMALL_GEMV_WASM = 1 << 16;
const PAGE = 65536;

type ExpRow = (p: number, n: number, scale: number, max: number, k: number) => number;
/** attn_decode(q, k, v, ldk, s, o, nk, nh, group, hs, scale, table): byte offsets and sizes. */
type AttnDecode = (...args: number[]) => void;
type Swiglu = (out: number, gate: number, up: number, n: number, k: number) => void;
/** gemv_rows / gemv_cols(w, ld, x, y, n, k, acc): byte offsets w, x, y, then sizes. */
type Kernel = (...args: number[]) => void;

/** One wasm instance of the product kernels and the memory they read. */
export class WasmGemv {
  readonly #mem: WebAssembly.Memory;
  readonly #rows: Kernel;
  readonly #cols: Kernel;
  readonly #expRow: ExpRow;
  readonly #swiglu: Swiglu;
  readonly #attn: AttnDecode;
  readonly #arena: boolean;
  #f32: Float32Array;
  /** Byte offsets of the exp kernels' tables in an arena (-1: not written). */
  #attnTable = -1;
  #swigluTable = -1;
  /** Bytes handed out by `alloc` (arena) . */
  #top = 0;

  /**
   * `arenaBytes`: a fixed memory of that size for `alloc`; null: a growing scratch memory.
   * `memory`: instead, an existing shared arena (the pool's worker's view of a decoder's).
   */
  constructor(module: WebAssembly.Module, arenaBytes: number | null, memory?: WebAssembly.Memory) {
    this.#arena = arenaBytes !== null || memory !== undefined;
    const pages = Math.max(1, Math.ceil((arenaBytes ?? PAGE) / PAGE));
    this.#mem = memory ?? new WebAssembly.Memory({ initial: pages });
    const inst = new WebAssembly.Instance(module, { env: { __linear_memory: this.#mem } });
    this.#rows = inst.exports.gemv_rows as Kernel;
    this.#cols = inst.exports.gemv_cols as Kernel;
    this.#expRow = inst.exports.attn_exp_row as ExpRow;
    this.#swiglu = inst.exports.swiglu_forward as Swiglu;
    this.#attn = inst.exports.attn_decode as AttnDecode;
    this.#f32 = new Float32Array(this.#mem.buffer);
  }

  /** A zeroed buffer of n floats (16-byte aligned) resident in an arena instance. */
  alloc(n: number): Float32Array {
    if (!this.#arena) throw new Error("WasmGemv.alloc needs an arena instance");
    const at = this.#top;
    const end = at + ((n * 4 + 15) & ~15);
    if (end > this.#mem.buffer.byteLength) throw new Error("WasmGemv arena is full");
    this.#top = end;
    return new Float32Array(this.#mem.buffer, at, n);
  }

  /** The instance's memory (a shared arena's goes to the pool's worker). */
  get memory(): WebAssembly.Memory {
    return this.#mem;
  }

  /** Byte offset of attn_decode's table in the arena (-1: none). */
  get attnTableAt(): number {
    return this.#attnTable;
  }

  /**
   * The worker's instance over a decoder's shared arena whose attention table lies at byte
   * `attnTable` (written by the decoder's own instance); runs `attnDecodeAt` only.
   */
  static onSharedArena(memory: WebAssembly.Memory, attnTable: number): WasmGemv | null {
    const mod = sharedKernelModule();
    if (mod === null) return null;
    const g = new WasmGemv(mod, null, memory);
    g.#attnTable = attnTable;
    return g;
  }

  /** attn_decode on operands given as byte offsets into this memory (see attnDecode). */
  attnDecodeAt(
    q: number,
    k: number,
    v: number,
    ldk: number,
    s: number,
    o: number,
    nk: number,
    NH: number,
    group: number,
    HS: number,
    scale: number,
  ): void {
    if (this.#attnTable < 0) throw new Error("WasmGemv.attnDecodeAt: no table");
    const end = this.#mem.buffer.byteLength;
    for (const at of [q, k, v, s, o]) {
      if (!(at >= 0 && at < end)) throw new Error("WasmGemv.attnDecodeAt: operand outside memory");
    }
    this.#attn(q, k, v, ldk, s, o, nk, NH, group, HS, scale, this.#attnTable);
  }

  /** Puts the tables of `expRow` and `swiglu` into an arena (ARENA_TABLE_BYTES of it). */
  addExpTables(): void {
    this.#attnTable = this.alloc(ATTN_TABLE_BYTES / 4).byteOffset;
    writeAttnTable(this.#mem.buffer, this.#attnTable);
    this.#swigluTable = this.alloc(SWIGLU_TABLE_BYTES / 4).byteOffset;
    writeSwigluTable(this.#mem.buffer, this.#swigluTable);
  }

  /**
   * p[0, n) = exp(p * scale - max) for a resident p and even n, as attention.ts's loop
   * (kernels.ll `attn_exp_row`); returns the float64 sum in index order.
   */
  expRow(p: Float32Array, n: number, scale: number, max: number): number {
    if (this.#attnTable < 0 || !this.holds(p)) throw new Error("WasmGemv.expRow: no table");
    return this.#expRow(p.byteOffset, n, scale, max, this.#attnTable);
  }

  /**
   * Decode attention of one sequence, every head (kernels.ll attn_decode): o(NH * HS) from
   * q(NH * HS) and the nk cache rows of k, v (ldk apart, head h reading kv head h / group),
   * the bits of the fused decoder's per-head loop. All resident; HS even; s holds nk + 2.
   */
  attnDecode(
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    ldk: number,
    s: Float32Array,
    o: Float32Array,
    nk: number,
    NH: number,
    group: number,
    HS: number,
    scale: number,
  ): void {
    for (const a of [q, k, v, s, o]) {
      if (!this.holds(a)) throw new Error("WasmGemv.attnDecode: an operand is not in the arena");
    }
    const at = (a: Float32Array) => a.byteOffset;
    this.attnDecodeAt(at(q), at(k), at(v), ldk, at(s), at(o), nk, NH, group, HS, scale);
  }

  /** out(n) = silu(gate) * up for resident operands and even n, as layers.ts swigluForward. */
  swiglu(out: Float32Array, gate: Float32Array, up: Float32Array, n: number): void {
    if (this.#swigluTable < 0 || !this.holds(out) || !this.holds(gate) || !this.holds(up)) {
      throw new Error("WasmGemv.swiglu: no table or an operand not in the arena");
    }
    this.#swiglu(out.byteOffset, gate.byteOffset, up.byteOffset, n, this.#swigluTable);
  }

  /** True when `a` lies in this instance's memory. */
  holds(a: Float32Array): boolean {
    return a.buffer === this.#mem.buffer;
  }

  /** y(N) = W(N, K) x(K) (+ y when beta = 1); W rows ldw apart. */
  rows(
    N: number,
    K: number,
    x: Float32Array,
    w: Float32Array,
    ldw: number,
    y: Float32Array,
    beta: number,
  ): void {
    this.#run(this.#rows, N, K, x, w, ldw, y, beta, N, K);
  }

  /** The scratch memory with at least `floats` floats (grown when needed). */
  #room(floats: number): Float32Array {
    if (floats * 4 > this.#mem.buffer.byteLength) {
      this.#mem.grow(Math.ceil((floats * 4 - this.#mem.buffer.byteLength) / PAGE));
      this.#f32 = new Float32Array(this.#mem.buffer);
    }
    return this.#f32;
  }

  /** y(N) = B(K, N)^T x(K) (+ y when beta = 1); B rows ldb apart. */
  cols(
    N: number,
    K: number,
    x: Float32Array,
    b: Float32Array,
    ldb: number,
    y: Float32Array,
    beta: number,
  ): void {
    this.#run(this.#cols, N, K, x, b, ldb, y, beta, K, N);
  }

  /** The kernel on resident operands, or on copies (matrix: R rows of L elements, ld apart). */
  #run(
    f: Kernel,
    N: number,
    K: number,
    x: Float32Array,
    w: Float32Array,
    ld: number,
    y: Float32Array,
    beta: number,
    R: number,
    L: number,
  ): void {
    const acc = beta === 0 ? 0 : 1;
    if (this.holds(x) && this.holds(w) && this.holds(y)) {
      f(w.byteOffset, ld, x.byteOffset, y.byteOffset, N, K, acc);
      return;
    }
    if (this.#arena) throw new Error("WasmGemv: an operand is not in the arena");
    // scratch: y (N), x (K), then the matrix packed (R, L); 16-byte aligned parts
    const al = (n: number) => (n + 3) & ~3;
    const xAt = al(N), wAt = xAt + al(K);
    const m = this.#room(wAt + R * L);
    if (acc) m.set(y.subarray(0, N), 0);
    m.set(x.subarray(0, K), xAt);
    if (ld === L) m.set(w.subarray(0, R * L), wAt);
    else for (let r = 0; r < R; r++) m.set(w.subarray(r * ld, r * ld + L), wAt + r * L);
    f(wAt * 4, L, xAt * 4, 0, N, K, acc);
    y.set(m.subarray(0, N));
  }
}

let scratch: WasmGemv | null | undefined;

/** This thread's scratch instance, or null without the wasm kernels (then OpenBLAS runs). */
export function smallGemv(): WasmGemv | null {
  if (scratch === undefined) {
    const mod = kernelModule();
    scratch = mod === null ? null : new WasmGemv(mod, null);
  }
  return scratch;
}

/**
 * True when an M = 1 product of this N, K runs in wasm: a strided matrix (its rows further
 * apart than their length: attention heads over the KV cache) with N * K <= SMALL_GEMV_WASM.
 * Dense weight GEMVs stay on OpenBLAS, about twice as fast per product at these sizes on the
 * bench host (fp32 FMA on wider vectors; a Deno FFI call costs ~0.2 us). `Gemm` and the
 * fused decoder both ask this.
 */
export function gemvInWasm(N: number, K: number, strided: boolean): boolean {
  return strided && N * K <= SMALL_GEMV_WASM && kernelModule() !== null;
}

/**
 * A fixed arena instance of `bytes` for a fused decoder's resident buffers, or null. `shared`:
 * in a shared memory the pool's worker can run kernels on too (null when that is unavailable).
 */
export function gemvArena(bytes: number, shared = false): WasmGemv | null {
  if (!shared) {
    const mod = kernelModule();
    return mod === null ? null : new WasmGemv(mod, bytes);
  }
  const mod = sharedKernelModule();
  if (mod === null) return null;
  const pages = Math.max(1, Math.ceil(bytes / PAGE));
  if (pages > MAX_PAGES) return null;
  try {
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
    return new WasmGemv(mod, null, memory);
  } catch {
    return null;
  }
}
