/**
 * OpenBLAS through Deno FFI: single-precision GEMM/GEMV on row-major Float32Arrays.
 *
 * The library opens lazily on first use. `TUNE_OPENBLAS_PATH` names a library file to
 * use instead of the default soname `libopenblas.so.0` (then a few usual paths). When no
 * library loads, `openBlas()` returns null and callers fall back to TypeScript kernels.
 * An explicit `TUNE_OPENBLAS_PATH` that does not load is an error, not a silent fallback.
 * Float32Array views are passed as "buffer": Deno passes the view's data pointer with its
 * byteOffset applied, so subarrays address the right elements.
 */

import { TuneError } from "./errors.ts";

/** CBLAS enum values (cblas.h). */
export const CBLAS_ROW_MAJOR = 101;
export const CBLAS_NO_TRANS = 111;
export const CBLAS_TRANS = 112;

const SYMBOLS = {
  // void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE transA,
  //   enum CBLAS_TRANSPOSE transB, blasint M, blasint N, blasint K, float alpha,
  //   const float *A, blasint lda, const float *B, blasint ldb, float beta,
  //   float *C, blasint ldc)
  cblas_sgemm: {
    parameters: [
      "i32", // order
      "i32", // transA
      "i32", // transB
      "i32", // M
      "i32", // N
      "i32", // K
      "f32", // alpha
      "buffer", // const float *A
      "i32", // lda
      "buffer", // const float *B
      "i32", // ldb
      "f32", // beta
      "buffer", // float *C
      "i32", // ldc
    ],
    result: "void",
  },
  // void cblas_sgemv(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE trans, blasint M,
  //   blasint N, float alpha, const float *A, blasint lda, const float *x, blasint incx,
  //   float beta, float *y, blasint incy)
  cblas_sgemv: {
    parameters: [
      "i32", // order
      "i32", // trans
      "i32", // M
      "i32", // N
      "f32", // alpha
      "buffer", // const float *A
      "i32", // lda
      "buffer", // const float *x
      "i32", // incx
      "f32", // beta
      "buffer", // float *y
      "i32", // incy
    ],
    result: "void",
  },
  // char *openblas_get_config(void)
  openblas_get_config: { parameters: [], result: "pointer" },
  // void openblas_set_num_threads(int num_threads)
  openblas_set_num_threads: { parameters: ["i32"], result: "void", optional: true },
  // int openblas_get_num_threads(void)
  openblas_get_num_threads: { parameters: [], result: "i32", optional: true },
} as const satisfies Deno.ForeignLibraryInterface;

/** Row-major single-precision BLAS calls (thin typed wrappers over the C symbols). */
export interface OpenBlas {
  /** Where the library was opened from. */
  readonly path: string;
  /** OpenBLAS build configuration string (for logs). */
  readonly config: string;
  /**
   * C(M, N) = alpha * op(A) @ op(B) + beta * C, row-major; op(X) = X or X^T.
   * A, B, C are Float32Array views whose first element is the matrix origin.
   */
  sgemm(
    transA: boolean,
    transB: boolean,
    M: number,
    N: number,
    K: number,
    alpha: number,
    A: Float32Array,
    lda: number,
    B: Float32Array,
    ldb: number,
    beta: number,
    C: Float32Array,
    ldc: number,
  ): void;
  /** y = alpha * op(A) @ x + beta * y with A(M, N) row-major. */
  sgemv(
    trans: boolean,
    M: number,
    N: number,
    alpha: number,
    A: Float32Array,
    lda: number,
    x: Float32Array,
    beta: number,
    y: Float32Array,
  ): void;
  /** Threads OpenBLAS was started with (1 when the library cannot say). */
  readonly maxThreads: number;
  /**
   * Threads for the following calls, clamped to 1..maxThreads; a no-op when unchanged (unless
   * `force`: another thread may have changed the process-wide count) or when the library
   * lacks openblas_set_num_threads. Small products run faster on one
   * thread: waking and joining a second costs more than it saves (much more on a busy host).
   */
  setThreads(n: number, force?: boolean): void;
}

const USUAL_PATHS = [
  "libopenblas.so.0",
  "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
  "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
  "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
  "/usr/lib64/libopenblas.so.0",
  "/usr/local/lib/libopenblas.so.0",
  "/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
  "libopenblas.so",
];

let cached: OpenBlas | null | undefined;

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env: behave as if unset
  }
}

function tryOpen(path: string): OpenBlas | null {
  let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    lib = Deno.dlopen(path, SYMBOLS);
  } catch {
    return null;
  }
  // Locals keep the calls on Deno's fast FFI path.
  const sgemm = lib.symbols.cblas_sgemm;
  const sgemv = lib.symbols.cblas_sgemv;
  const cfgPtr = lib.symbols.openblas_get_config();
  const config = cfgPtr === null ? "" : Deno.UnsafePointerView.getCString(cfgPtr);
  const setNum = lib.symbols.openblas_set_num_threads;
  const getNum = lib.symbols.openblas_get_num_threads;
  const maxThreads = getNum ? Math.max(1, getNum()) : 1;
  let threads = maxThreads;
  return {
    path,
    config,
    maxThreads,
    setThreads(n: number, force = false) {
      const t = Math.max(1, Math.min(maxThreads, n | 0));
      if ((t === threads && !force) || !setNum) return;
      setNum(t);
      threads = t;
    },
    sgemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) {
      sgemm(
        CBLAS_ROW_MAJOR,
        transA ? CBLAS_TRANS : CBLAS_NO_TRANS,
        transB ? CBLAS_TRANS : CBLAS_NO_TRANS,
        M,
        N,
        K,
        alpha,
        A,
        lda,
        B,
        ldb,
        beta,
        C,
        ldc,
      );
    },
    sgemv(trans, M, N, alpha, A, lda, x, beta, y) {
      sgemv(
        CBLAS_ROW_MAJOR,
        trans ? CBLAS_TRANS : CBLAS_NO_TRANS,
        M,
        N,
        alpha,
        A,
        lda,
        x,
        1,
        beta,
        y,
        1,
      );
    },
  };
}

/**
 * The OpenBLAS binding, opened on first call; null when no library can be opened
 * Throws TuneError when `TUNE_OPENBLAS_PATH` names a file that does not load.
 */
export function openBlas(): OpenBlas | null {
  if (cached !== undefined) return cached;
  hintAvx512CoreType();
  setDefault("OPENBLAS_THREAD_TIMEOUT", THREAD_TIMEOUT, ["GOTO_THREAD_TIMEOUT"]);
  const override = readEnv("TUNE_OPENBLAS_PATH");
  if (override) {
    const blas = tryOpen(override);
    if (!blas) {
      throw new TuneError(
        `TUNE_OPENBLAS_PATH=${override} could not be opened as OpenBLAS; ` +
          `point it at a libopenblas shared library or unset it`,
      );
    }
    cached = blas;
    return cached;
  }
  cached = null;
  for (const p of USUAL_PATHS) {
    const blas = tryOpen(p);
    if (blas) {
      cached = blas;
      break;
    }
  }
  return cached;
}

/** The AVX-512 subsets OpenBLAS's SkylakeX kernels use. */
const AVX512_FLAGS = ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"];

/**
 * OpenBLAS picks its kernels at load from the CPU it recognises: 0.3.21 (Debian 12's)
 * predates AMD Zen 4, which has AVX-512, and falls back to its AVX2 `Haswell` kernels there
 * (about 100 GFLOP/s a core for sgemm against 177 with `SkylakeX` on the 2-core EPYC of
 * docs/benchmarks.md). On an AMD CPU with the AVX-512 subsets those kernels use, and with
 * `OPENBLAS_CORETYPE` unset, this sets it to `SkylakeX` before the library loads (a
 * DYNAMIC_ARCH build reads it then; others ignore it). Intel CPUs with AVX-512 are already
 * recognised. The products' values change within float rounding (another kernel's
 * summation order), as they do between machines; `OPENBLAS_CORETYPE=Haswell` keeps the old.
 */
function hintAvx512CoreType(): void {
  if (readEnv("OPENBLAS_CORETYPE") !== undefined) return;
  let cpuinfo: string;
  try {
    cpuinfo = Deno.readTextFileSync("/proc/cpuinfo");
  } catch {
    return; // not Linux, or no --allow-read
  }
  const amd = /^vendor_id\s*:\s*AuthenticAMD$/m.test(cpuinfo);
  const flags = new Set(cpuinfo.match(/^flags\s*:(.*)$/m)?.[1].trim().split(/\s+/) ?? []);
  if (!amd || !AVX512_FLAGS.every((f) => flags.has(f))) return;
  setDefault("OPENBLAS_CORETYPE", "SkylakeX");
}

/**
 * Set OpenBLAS environment variable `name` to `value` before the library loads, unless it (or
 * one of `aliases`, which OpenBLAS also reads) is set already.
 */
function setDefault(name: string, value: string, aliases: readonly string[] = []): void {
  if ([name, ...aliases].some((n) => readEnv(n) !== undefined)) return;
  try {
    Deno.env.set(name, value);
  } catch {
    // no --allow-env: OpenBLAS keeps its own choice
  }
}

/**
 * OPENBLAS_THREAD_TIMEOUT that tune sets when it (and GOTO_THREAD_TIMEOUT) is unset. After each
 * threaded call OpenBLAS's worker threads wait for the next one by spinning on sched_yield for
 * 2^28 cycles (about 0.1 s) before they sleep. While the CPU pool runs the two halves of
 * attention, cross-entropy, SwiGLU or AdamW, that spinner is a third busy thread on two cores
 * (and on a VM where a yield traps to the hypervisor, an expensive one). 20 (2^20 cycles, a few
 * tenths of a millisecond) is still longer than the gaps between a decode step's threaded
 * products (so decode keeps its workers awake; 2^4 made each of them a wake-up), and short
 * against a pool split. Numerics are unchanged.
 */
export const THREAD_TIMEOUT = "20";

/** The library names and paths tried, in order, when `TUNE_OPENBLAS_PATH` is unset. */
export const OPENBLAS_CANDIDATES: readonly string[] = USUAL_PATHS;
