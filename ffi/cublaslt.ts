/**
 * cuBLASLt bindings and a small GEMM planner: bf16 or fp32 operands, fp32 compute and
 * scale, optional strided batch, heuristic algorithm chosen once per shape and cached.
 *
 * Enum values checked against cublasLt.h / cublas_api.h / library_types.h:
 * CUBLAS_COMPUTE_32F = 68, CUDA_R_32F = 0, CUDA_R_16BF = 14; matmul desc attributes
 * TRANSA 3, TRANSB 4 (int32); layout attributes BATCH_COUNT 5 (int32),
 * STRIDED_BATCH_OFFSET 6 (int64); preference MAX_WORKSPACE_BYTES 1 (uint64),
 * MIN_ALIGNMENT_{A,B,C,D}_BYTES 5..8 (uint32); cublasLtMatmulHeuristicResult_t is 96 bytes
 * with the 64-byte algo first and `state` (cublasStatus_t) at byte 72.
 */

import { LIBCUBLASLT, openLibrary } from "./library_path.ts";

/** The cuBLASLt symbols we use, with their C types. */
export const CUBLASLT_SYMBOLS = {
  cublasLtCreate: { parameters: ["buffer"], result: "i32" }, // (cublasLtHandle_t*)
  cublasLtDestroy: { parameters: ["pointer"], result: "i32" },
  cublasLtGetVersion: { parameters: [], result: "usize" },
  cublasLtGetStatusName: { parameters: ["i32"], result: "pointer" }, // const char*
  cublasLtGetStatusString: { parameters: ["i32"], result: "pointer" },
  // (cublasLtMatmulDesc_t*, cublasComputeType_t, cudaDataType_t scaleType)
  cublasLtMatmulDescCreate: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  cublasLtMatmulDescDestroy: { parameters: ["pointer"], result: "i32" },
  // (desc, attr, const void* buf, size_t sizeInBytes)
  cublasLtMatmulDescSetAttribute: {
    parameters: ["pointer", "i32", "buffer", "usize"],
    result: "i32",
  },
  // (cublasLtMatrixLayout_t*, cudaDataType, uint64_t rows, uint64_t cols, int64_t ld)
  cublasLtMatrixLayoutCreate: {
    parameters: ["buffer", "i32", "u64", "u64", "i64"],
    result: "i32",
  },
  cublasLtMatrixLayoutDestroy: { parameters: ["pointer"], result: "i32" },
  cublasLtMatrixLayoutSetAttribute: {
    parameters: ["pointer", "i32", "buffer", "usize"],
    result: "i32",
  },
  cublasLtMatmulPreferenceCreate: { parameters: ["buffer"], result: "i32" },
  cublasLtMatmulPreferenceDestroy: { parameters: ["pointer"], result: "i32" },
  cublasLtMatmulPreferenceSetAttribute: {
    parameters: ["pointer", "i32", "buffer", "usize"],
    result: "i32",
  },
  // (handle, desc, Adesc, Bdesc, Cdesc, Ddesc, pref, int requested, results[], int* returned)
  cublasLtMatmulAlgoGetHeuristic: {
    parameters: [
      "pointer",
      "pointer",
      "pointer",
      "pointer",
      "pointer",
      "pointer",
      "pointer",
      "i32",
      "buffer",
      "buffer",
    ],
    result: "i32",
  },
  // (handle, desc, alpha*, A, Adesc, B, Bdesc, beta*, C, Cdesc, D, Ddesc, algo*, workspace,
  //  workspaceSize, stream)
  cublasLtMatmul: {
    parameters: [
      "pointer",
      "pointer",
      "buffer",
      "u64",
      "pointer",
      "u64",
      "pointer",
      "buffer",
      "u64",
      "pointer",
      "u64",
      "pointer",
      "buffer",
      "u64",
      "usize",
      "pointer",
    ],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** cublasComputeType_t CUBLAS_COMPUTE_32F. */
export const CUBLAS_COMPUTE_32F = 68;
/** cublasComputeType_t CUBLAS_COMPUTE_32F_FAST_TF32: fp32 operands on TF32 tensor cores. */
export const CUBLAS_COMPUTE_32F_FAST_TF32 = 77;
/** cudaDataType_t values. */
export const CUDA_R = { F32: 0, BF16: 14 } as const;
/** cublasLtMatmulDescAttributes_t values. */
export const MATMUL_DESC = { TRANSA: 3, TRANSB: 4, EPILOGUE: 7, BIAS_POINTER: 8 } as const;
/** cublasLtMatrixLayoutAttribute_t values. */
export const LAYOUT = { BATCH_COUNT: 5, STRIDED_BATCH_OFFSET: 6 } as const;
/** cublasLtMatmulPreferenceAttributes_t values. */
export const PREF = {
  MAX_WORKSPACE_BYTES: 1,
  MIN_ALIGNMENT_A_BYTES: 5,
  MIN_ALIGNMENT_B_BYTES: 6,
  MIN_ALIGNMENT_C_BYTES: 7,
  MIN_ALIGNMENT_D_BYTES: 8,
} as const;
/** Size of cublasLtMatmulHeuristicResult_t and of its leading cublasLtMatmulAlgo_t. */
export const HEURISTIC_RESULT_BYTES = 96;
export const ALGO_BYTES = 64;

/** cublasStatus_t names, used when cublasLtGetStatusName is unavailable. */
const STATUS_NAMES: Record<number, string> = {
  0: "CUBLAS_STATUS_SUCCESS",
  1: "CUBLAS_STATUS_NOT_INITIALIZED",
  3: "CUBLAS_STATUS_ALLOC_FAILED",
  7: "CUBLAS_STATUS_INVALID_VALUE",
  8: "CUBLAS_STATUS_ARCH_MISMATCH",
  11: "CUBLAS_STATUS_MAPPING_ERROR",
  13: "CUBLAS_STATUS_EXECUTION_FAILED",
  14: "CUBLAS_STATUS_INTERNAL_ERROR",
  15: "CUBLAS_STATUS_NOT_SUPPORTED",
  16: "CUBLAS_STATUS_LICENSE_ERROR",
};

/** The opened cuBLASLt library. */
export type CublasLtLib = Deno.DynamicLibrary<typeof CUBLASLT_SYMBOLS>["symbols"];

let cached: { lib: CublasLtLib; path: string } | null = null;

/** Open cuBLASLt once (throws a one-line TuneError when missing). */
export function cublasLt(): CublasLtLib {
  if (cached === null) {
    const o = openLibrary(LIBCUBLASLT, CUBLASLT_SYMBOLS);
    cached = { lib: o.lib.symbols, path: o.path };
  }
  return cached.lib;
}

/** Where cuBLASLt was opened from ("" before it is opened). */
export function cublasLtPath(): string {
  return cached?.path ?? "";
}

/** An error from a cuBLASLt call. */
export class CublasError extends Error {
  constructor(readonly call: string, readonly status: number, detail = "") {
    const p = cublasLt().cublasLtGetStatusName(status);
    const name = p === null ? STATUS_NAMES[status] ?? `cublasStatus ${status}` : Deno
      .UnsafePointerView.getCString(p);
    super(`${call} failed: ${name}${detail ? ` (${detail})` : ""}`);
    this.name = "CublasError";
  }
}

/** Throw a CublasError naming `call` unless `status` is CUBLAS_STATUS_SUCCESS. */
export function checkBlas(call: string, status: number): void {
  if (status !== 0) throw new CublasError(call, status);
}

/** Operand element type of a GEMM. */
export type GemmType = "bf16" | "f32";

/**
 * One column-major GEMM shape: D(m, n) = alpha * op(A) op(B) + beta * C, with C = D.
 * op(A) is m x k, op(B) is k x n. A is stored (transA ? k x m : m x k) with leading
 * dimension lda, and so on. Batches are strided by strideA/B/C elements.
 */
export interface GemmShape {
  transA: boolean;
  transB: boolean;
  m: number;
  n: number;
  k: number;
  lda: number;
  ldb: number;
  ldc: number;
  abType: GemmType;
  cType: GemmType;
  /** For fp32 operands: allow TF32 tensor cores (faster, 10-bit mantissa products). */
  tf32?: boolean;
  batch?: number;
  strideA?: number;
  strideB?: number;
  strideC?: number;
}

interface Plan {
  desc: Deno.PointerValue;
  a: Deno.PointerValue;
  b: Deno.PointerValue;
  c: Deno.PointerValue;
  algo: Uint8Array;
}

function dtypeCode(t: GemmType): number {
  return t === "bf16" ? CUDA_R.BF16 : CUDA_R.F32;
}

/** Largest power of two up to 256 dividing the address (what the algo may assume). */
function alignmentOf(addr: bigint): number {
  let a = 256;
  while (a > 1 && addr % BigInt(a) !== 0n) a >>= 1;
  return a;
}

/**
 * cuBLASLt handle plus a cache of descriptors and chosen algorithms per shape (and
 * operand alignment), with one workspace given by the caller.
 */
export class GemmRunner {
  private readonly lib: CublasLtLib;
  private readonly handle: Deno.PointerValue;
  private readonly plans = new Map<string, Plan>();
  private readonly alpha = new Float32Array(1);
  private readonly beta = new Float32Array(1);

  /** `workspace` is a device buffer of `workspaceBytes` (32 MiB is usual). */
  constructor(
    private readonly stream: Deno.PointerValue,
    private readonly workspace: bigint,
    private readonly workspaceBytes: number,
  ) {
    this.lib = cublasLt();
    const slot = new BigUint64Array(1);
    checkBlas("cublasLtCreate", this.lib.cublasLtCreate(slot));
    this.handle = Deno.UnsafePointer.create(slot[0]);
  }

  /** Number of cached plans (shapes seen). */
  get planCount(): number {
    return this.plans.size;
  }

  /** Run D = alpha op(A) op(B) + beta D on the stream. */
  run(shape: GemmShape, A: bigint, B: bigint, D: bigint, alpha: number, beta: number): void {
    const plan = this.plan(shape, alignmentOf(A), alignmentOf(B), alignmentOf(D));
    this.alpha[0] = alpha;
    this.beta[0] = beta;
    checkBlas(
      `cublasLtMatmul(m=${shape.m}, n=${shape.n}, k=${shape.k})`,
      this.lib.cublasLtMatmul(
        this.handle,
        plan.desc,
        this.alpha,
        A,
        plan.a,
        B,
        plan.b,
        this.beta,
        D,
        plan.c,
        D,
        plan.c,
        plan.algo,
        this.workspace,
        BigInt(this.workspaceBytes),
        this.stream,
      ),
    );
  }

  private plan(s: GemmShape, alA: number, alB: number, alD: number): Plan {
    const batch = s.batch ?? 1;
    const key = [
      s.transA,
      s.transB,
      s.m,
      s.n,
      s.k,
      s.lda,
      s.ldb,
      s.ldc,
      s.abType,
      s.cType,
      s.tf32 === true && s.abType === "f32",
      batch,
      s.strideA ?? 0,
      s.strideB ?? 0,
      s.strideC ?? 0,
      alA,
      alB,
      alD,
    ].join(",");
    const hit = this.plans.get(key);
    if (hit) return hit;
    const lib = this.lib;
    const slot = new BigUint64Array(1);
    const ptr = () => Deno.UnsafePointer.create(slot[0]);
    checkBlas(
      "cublasLtMatmulDescCreate",
      lib.cublasLtMatmulDescCreate(
        slot,
        s.tf32 && s.abType === "f32" ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F,
        CUDA_R.F32,
      ),
    );
    const desc = ptr();
    const i32 = new Int32Array(1);
    const setDesc = (attr: number, v: number) => {
      i32[0] = v;
      checkBlas(
        `cublasLtMatmulDescSetAttribute(${attr})`,
        lib.cublasLtMatmulDescSetAttribute(desc, attr, i32, 4n),
      );
    };
    setDesc(MATMUL_DESC.TRANSA, s.transA ? 1 : 0);
    setDesc(MATMUL_DESC.TRANSB, s.transB ? 1 : 0);
    const layout = (
      t: GemmType,
      rows: number,
      cols: number,
      ld: number,
      stride: number,
    ): Deno.PointerValue => {
      checkBlas(
        "cublasLtMatrixLayoutCreate",
        lib.cublasLtMatrixLayoutCreate(slot, dtypeCode(t), BigInt(rows), BigInt(cols), BigInt(ld)),
      );
      const l = ptr();
      if (batch > 1) {
        const n32 = new Int32Array([batch]);
        checkBlas(
          "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)",
          lib.cublasLtMatrixLayoutSetAttribute(l, LAYOUT.BATCH_COUNT, n32, 4n),
        );
        const s64 = new BigInt64Array([BigInt(stride)]);
        checkBlas(
          "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)",
          lib.cublasLtMatrixLayoutSetAttribute(l, LAYOUT.STRIDED_BATCH_OFFSET, s64, 8n),
        );
      }
      return l;
    };
    const a = s.transA
      ? layout(s.abType, s.k, s.m, s.lda, s.strideA ?? 0)
      : layout(s.abType, s.m, s.k, s.lda, s.strideA ?? 0);
    const b = s.transB
      ? layout(s.abType, s.n, s.k, s.ldb, s.strideB ?? 0)
      : layout(s.abType, s.k, s.n, s.ldb, s.strideB ?? 0);
    const c = layout(s.cType, s.m, s.n, s.ldc, s.strideC ?? 0);

    checkBlas("cublasLtMatmulPreferenceCreate", lib.cublasLtMatmulPreferenceCreate(slot));
    const pref = ptr();
    const ws = new BigUint64Array([BigInt(this.workspaceBytes)]);
    checkBlas(
      "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)",
      lib.cublasLtMatmulPreferenceSetAttribute(pref, PREF.MAX_WORKSPACE_BYTES, ws, 8n),
    );
    for (
      const [attr, al] of [
        [PREF.MIN_ALIGNMENT_A_BYTES, alA],
        [PREF.MIN_ALIGNMENT_B_BYTES, alB],
        [PREF.MIN_ALIGNMENT_C_BYTES, alD],
        [PREF.MIN_ALIGNMENT_D_BYTES, alD],
      ]
    ) {
      const u32 = new Uint32Array([al]);
      checkBlas(
        `cublasLtMatmulPreferenceSetAttribute(${attr})`,
        lib.cublasLtMatmulPreferenceSetAttribute(pref, attr, u32, 4n),
      );
    }
    const results = new Uint8Array(HEURISTIC_RESULT_BYTES);
    const count = new Int32Array(1);
    const what = `m=${s.m} n=${s.n} k=${s.k} ${s.abType}->${s.cType} batch=${batch}`;
    checkBlas(
      `cublasLtMatmulAlgoGetHeuristic(${what})`,
      lib.cublasLtMatmulAlgoGetHeuristic(this.handle, desc, a, b, c, c, pref, 1, results, count),
    );
    lib.cublasLtMatmulPreferenceDestroy(pref);
    const state = new DataView(results.buffer).getInt32(72, true);
    if (count[0] < 1 || state !== 0) {
      throw new CublasError(`cublasLtMatmulAlgoGetHeuristic(${what})`, 15, "no algorithm");
    }
    const plan = { desc, a, b, c, algo: results.slice(0, ALGO_BYTES) };
    this.plans.set(key, plan);
    return plan;
  }

  /** Destroy the cached descriptors and the handle. */
  destroy(): void {
    for (const p of this.plans.values()) {
      this.lib.cublasLtMatrixLayoutDestroy(p.a);
      this.lib.cublasLtMatrixLayoutDestroy(p.b);
      this.lib.cublasLtMatrixLayoutDestroy(p.c);
      this.lib.cublasLtMatmulDescDestroy(p.desc);
    }
    this.plans.clear();
    this.lib.cublasLtDestroy(this.handle);
  }
}
