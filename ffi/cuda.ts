/**
 * CUDA driver API bindings (libcuda.so.1), opened lazily on first use.
 *
 * Every CUresult goes through `check()`, which throws naming the call and the status
 * (cuGetErrorName). Device pointers are `bigint` (CUdeviceptr is unsigned long long);
 * handles (context, module, function, stream, event) are `Deno.PointerValue`.
 * Versioned names (`cuMemAlloc_v2` ...) are the ones cuda.h maps the plain names to
 * (checked against CUDA 13.0's cuda.h).
 */

import { LIBCUDA, openLibrary } from "./library_path.ts";

/** The driver symbols we use, with their C types. */
export const CUDA_SYMBOLS = {
  cuInit: { parameters: ["u32"], result: "i32" }, // (unsigned int flags)
  cuDriverGetVersion: { parameters: ["buffer"], result: "i32" }, // (int*)
  cuDeviceGetCount: { parameters: ["buffer"], result: "i32" }, // (int*)
  cuDeviceGet: { parameters: ["buffer", "i32"], result: "i32" }, // (CUdevice*, int ordinal)
  cuDeviceGetName: { parameters: ["buffer", "i32", "i32"], result: "i32" }, // (char*, int len, CUdevice)
  cuDeviceTotalMem_v2: { parameters: ["buffer", "i32"], result: "i32" }, // (size_t*, CUdevice)
  cuDeviceGetAttribute: { parameters: ["buffer", "i32", "i32"], result: "i32" }, // (int*, attrib, CUdevice)
  cuDevicePrimaryCtxRetain: { parameters: ["buffer", "i32"], result: "i32" }, // (CUcontext*, CUdevice)
  cuDevicePrimaryCtxRelease_v2: { parameters: ["i32"], result: "i32" }, // (CUdevice)
  cuCtxSetCurrent: { parameters: ["pointer"], result: "i32" }, // (CUcontext)
  cuCtxSynchronize: { parameters: [], result: "i32" },
  cuMemGetInfo_v2: { parameters: ["buffer", "buffer"], result: "i32" }, // (size_t* free, size_t* total)
  cuMemAlloc_v2: { parameters: ["buffer", "usize"], result: "i32" }, // (CUdeviceptr*, size_t)
  cuMemFree_v2: { parameters: ["u64"], result: "i32" }, // (CUdeviceptr)
  cuMemAllocHost_v2: { parameters: ["buffer", "usize"], result: "i32" }, // (void** pp, size_t) page-locked
  cuMemFreeHost: { parameters: ["pointer"], result: "i32" }, // (void* p)
  cuMemcpyHtoD_v2: { parameters: ["u64", "buffer", "usize"], result: "i32" }, // (dst, const void*, size_t)
  cuMemcpyDtoH_v2: { parameters: ["buffer", "u64", "usize"], result: "i32" }, // (void*, src, size_t)
  cuMemcpyHtoDAsync_v2: { parameters: ["u64", "buffer", "usize", "pointer"], result: "i32" }, // (+ CUstream)
  cuMemcpyDtoHAsync_v2: { parameters: ["buffer", "u64", "usize", "pointer"], result: "i32" },
  cuMemcpyDtoDAsync_v2: { parameters: ["u64", "u64", "usize", "pointer"], result: "i32" },
  cuMemsetD8_v2: { parameters: ["u64", "u8", "usize"], result: "i32" }, // (dst, unsigned char, N)
  cuMemsetD32_v2: { parameters: ["u64", "u32", "usize"], result: "i32" }, // (dst, unsigned int, N)
  cuMemsetD8Async: { parameters: ["u64", "u8", "usize", "pointer"], result: "i32" },
  cuMemsetD32Async: { parameters: ["u64", "u32", "usize", "pointer"], result: "i32" },
  cuStreamCreate: { parameters: ["buffer", "u32"], result: "i32" }, // (CUstream*, unsigned flags)
  cuStreamDestroy_v2: { parameters: ["pointer"], result: "i32" },
  cuStreamSynchronize: { parameters: ["pointer"], result: "i32" },
  cuStreamWaitEvent: { parameters: ["pointer", "pointer", "u32"], result: "i32" }, // (CUstream, CUevent, unsigned flags = 0)
  cuEventCreate: { parameters: ["buffer", "u32"], result: "i32" }, // (CUevent*, unsigned flags)
  cuEventDestroy_v2: { parameters: ["pointer"], result: "i32" },
  cuEventRecord: { parameters: ["pointer", "pointer"], result: "i32" }, // (CUevent, CUstream)
  cuEventSynchronize: { parameters: ["pointer"], result: "i32" },
  // CUDA 13's header maps cuEventElapsedTime to _v2, which older drivers lack; newer ones
  // keep the unversioned export. Both optional: a missing one is null, never a load error.
  cuEventElapsedTime: {
    parameters: ["buffer", "pointer", "pointer"], // (float* ms, CUevent start, CUevent end)
    result: "i32",
    optional: true,
  },
  cuEventElapsedTime_v2: {
    parameters: ["buffer", "pointer", "pointer"],
    result: "i32",
    optional: true,
  },
  cuModuleLoadDataEx: {
    // (CUmodule*, const void* image, unsigned n, CUjit_option* opts, void** values)
    parameters: ["buffer", "buffer", "u32", "buffer", "buffer"],
    result: "i32",
  },
  cuModuleUnload: { parameters: ["pointer"], result: "i32" },
  cuModuleGetFunction: { parameters: ["buffer", "pointer", "buffer"], result: "i32" }, // (CUfunction*, CUmodule, const char*)
  cuFuncSetAttribute: { parameters: ["pointer", "i32", "i32"], result: "i32" }, // (CUfunction, attrib, int)
  cuLaunchKernel: {
    // (f, gridX, gridY, gridZ, blockX, blockY, blockZ, sharedMemBytes, hStream, kernelParams, extra)
    parameters: [
      "pointer",
      "u32",
      "u32",
      "u32",
      "u32",
      "u32",
      "u32",
      "u32",
      "pointer",
      "pointer",
      "pointer",
    ],
    result: "i32",
  },
  cuGetErrorName: { parameters: ["i32", "buffer"], result: "i32" }, // (CUresult, const char**)
  cuGetErrorString: { parameters: ["i32", "buffer"], result: "i32" }, // (CUresult, const char**)
} as const satisfies Deno.ForeignLibraryInterface;

/** `CUjit_option` values (cuda.h). */
export const CU_JIT = {
  INFO_LOG_BUFFER: 3,
  INFO_LOG_BUFFER_SIZE_BYTES: 4,
  ERROR_LOG_BUFFER: 5,
  ERROR_LOG_BUFFER_SIZE_BYTES: 6,
  OPTIMIZATION_LEVEL: 7,
} as const;

/** `cuStreamCreate` flags (cuda.h CUstream_flags): no implicit ordering with the legacy stream. */
export const CU_STREAM_NON_BLOCKING = 0x1;

/** `cuEventCreate` flags (cuda.h CUevent_flags): an ordering-only event, no timestamps. */
export const CU_EVENT_DISABLE_TIMING = 0x2;

/** `CUdevice_attribute` values we read (cuda.h). */
export const CU_DEVICE_ATTRIBUTE = {
  MULTIPROCESSOR_COUNT: 16,
  COMPUTE_CAPABILITY_MAJOR: 75,
  COMPUTE_CAPABILITY_MINOR: 76,
  MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: 97,
} as const;

/** `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` (cuda.h). */
export const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;

/** `CU_LAUNCH_PARAM_*` markers of cuLaunchKernel's `extra` array (cuda.h). */
export const CU_LAUNCH_PARAM = { END: 0, BUFFER_POINTER: 1, BUFFER_SIZE: 2 } as const;

/** The opened driver library. */
export type CudaLib = Deno.DynamicLibrary<typeof CUDA_SYMBOLS>["symbols"];

let cached: CudaLib | null = null;

/** Open libcuda once (throws a one-line TuneError when the driver is missing). */
export function cuda(): CudaLib {
  if (cached === null) cached = openLibrary(LIBCUDA, CUDA_SYMBOLS).lib.symbols;
  return cached;
}

/** Read a NUL-terminated C string whose address was written into `slot`. */
export function readCStringAt(slot: BigUint64Array): string {
  const p = Deno.UnsafePointer.create(slot[0]);
  return p === null ? "" : Deno.UnsafePointerView.getCString(p);
}

/** "CUDA_ERROR_OUT_OF_MEMORY (out of memory)" for a CUresult. */
export function cudaErrorText(status: number): string {
  const lib = cuda();
  const slot = new BigUint64Array(1);
  const name = lib.cuGetErrorName(status, slot) === 0 ? readCStringAt(slot) : `CUresult ${status}`;
  slot[0] = 0n;
  const text = lib.cuGetErrorString(status, slot) === 0 ? readCStringAt(slot) : "";
  return text ? `${name} (${text})` : name;
}

/** An error from a CUDA driver call. */
export class CudaError extends Error {
  constructor(readonly call: string, readonly status: number, detail = "") {
    super(`${call} failed: ${cudaErrorText(status)}${detail ? `\n${detail}` : ""}`);
    this.name = "CudaError";
  }
}

/** Throw a CudaError naming `call` unless `status` is CUDA_SUCCESS (0). */
export function check(call: string, status: number): void {
  if (status !== 0) throw new CudaError(call, status);
}

/** Read the first pointer-sized slot of `out` as a handle. */
export function handleOf(out: BigUint64Array): Deno.PointerValue {
  return Deno.UnsafePointer.create(out[0]);
}

/** Facts about the GPU for reports. */
export interface DeviceInfo {
  name: string;
  totalBytes: number;
  driverVersion: number;
  computeCapability: [number, number];
  multiprocessors: number;
}

/** Initialise the driver, retain the primary context of `ordinal` and make it current. */
export function initDevice(ordinal: number): { device: number; context: Deno.PointerValue } {
  const lib = cuda();
  check("cuInit", lib.cuInit(0));
  const i32 = new Int32Array(1);
  check("cuDeviceGetCount", lib.cuDeviceGetCount(i32));
  if (ordinal >= i32[0]) {
    throw new CudaError("cuDeviceGet", 101, `device ${ordinal} requested, ${i32[0]} present`);
  }
  check("cuDeviceGet", lib.cuDeviceGet(i32, ordinal));
  const device = i32[0];
  const slot = new BigUint64Array(1);
  check("cuDevicePrimaryCtxRetain", lib.cuDevicePrimaryCtxRetain(slot, device));
  const context = handleOf(slot);
  check("cuCtxSetCurrent", lib.cuCtxSetCurrent(context));
  return { device, context };
}

/** Name, memory, driver version and compute capability of `device`. */
export function deviceInfo(device: number): DeviceInfo {
  const lib = cuda();
  const name = new Uint8Array(256);
  check("cuDeviceGetName", lib.cuDeviceGetName(name, name.length, device));
  const total = new BigUint64Array(1);
  check("cuDeviceTotalMem_v2", lib.cuDeviceTotalMem_v2(total, device));
  const i32 = new Int32Array(1);
  check("cuDriverGetVersion", lib.cuDriverGetVersion(i32));
  const driverVersion = i32[0];
  const attr = (a: number): number => {
    check("cuDeviceGetAttribute", lib.cuDeviceGetAttribute(i32, a, device));
    return i32[0];
  };
  return {
    name: new TextDecoder().decode(name.subarray(0, name.indexOf(0))),
    totalBytes: Number(total[0]),
    driverVersion,
    computeCapability: [
      attr(CU_DEVICE_ATTRIBUTE.COMPUTE_CAPABILITY_MAJOR),
      attr(CU_DEVICE_ATTRIBUTE.COMPUTE_CAPABILITY_MINOR),
    ],
    multiprocessors: attr(CU_DEVICE_ATTRIBUTE.MULTIPROCESSOR_COUNT),
  };
}

/** A loaded PTX module and its kernels. */
export class CudaModule {
  private readonly functions = new Map<string, Deno.PointerValue>();
  private constructor(readonly name: string, readonly handle: Deno.PointerValue) {}

  /**
   * JIT-compile `ptx` for the current context. On failure the error carries the JIT log.
   */
  static load(name: string, ptx: string): CudaModule {
    const lib = cuda();
    const image = new TextEncoder().encode(ptx + "\0");
    const logSize = 16384;
    const errLog = new Uint8Array(logSize);
    const infoLog = new Uint8Array(logSize);
    // CUjit_option is a C enum (4 bytes); values are void* slots (8 bytes each).
    const opts = new Int32Array([
      CU_JIT.ERROR_LOG_BUFFER,
      CU_JIT.ERROR_LOG_BUFFER_SIZE_BYTES,
      CU_JIT.INFO_LOG_BUFFER,
      CU_JIT.INFO_LOG_BUFFER_SIZE_BYTES,
    ]);
    const vals = new BigUint64Array([
      BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(errLog))),
      BigInt(logSize),
      BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(infoLog))),
      BigInt(logSize),
    ]);
    const slot = new BigUint64Array(1);
    const status = lib.cuModuleLoadDataEx(slot, image, opts.length, opts, vals);
    if (status !== 0) {
      const text = (b: Uint8Array) => {
        const end = b.indexOf(0);
        return new TextDecoder().decode(b.subarray(0, end < 0 ? b.length : end)).trim();
      };
      const log = [text(errLog), text(infoLog)].filter((s) => s).join("\n");
      throw new CudaError(`cuModuleLoadDataEx(${name})`, status, log ? `JIT log:\n${log}` : "");
    }
    return new CudaModule(name, handleOf(slot));
  }

  /** The kernel called `kernel` (an `extern "C"` name). */
  fn(kernel: string): Deno.PointerValue {
    let f = this.functions.get(kernel);
    if (f === undefined) {
      const slot = new BigUint64Array(1);
      const cname = new TextEncoder().encode(kernel + "\0");
      check(
        `cuModuleGetFunction(${this.name}.${kernel})`,
        cuda().cuModuleGetFunction(slot, this.handle, cname),
      );
      f = handleOf(slot);
      this.functions.set(kernel, f);
    }
    return f;
  }
}

/** Argument kinds of a kernel: 64-bit pointer, 32-bit int, 32-bit float. */
export type ArgKind = "p" | "i" | "f";

/**
 * Launches kernels through cuLaunchKernel's `extra` form: one packed argument buffer with
 * each argument at its natural alignment (8 for pointers, 4 for int/float), exactly as the
 * C compiler lays out the kernel's parameters. The buffers are made once and reused: the
 * driver copies the arguments at launch time.
 */
export class KernelLauncher {
  private readonly args = new ArrayBuffer(1024);
  private readonly view = new DataView(this.args);
  // Explicit ArrayBuffers: their memory lives outside the JS heap and never moves, so
  // the addresses stored in `extra` stay valid.
  private readonly size = new BigUint64Array(new ArrayBuffer(8));
  private readonly extra: BigUint64Array;
  private readonly extraPtr: Deno.PointerValue;
  private readonly launchFn: CudaLib["cuLaunchKernel"];

  constructor(private readonly stream: Deno.PointerValue) {
    const addr = (b: ArrayBufferView | ArrayBuffer) =>
      BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(b as BufferSource)));
    this.extra = new BigUint64Array(new ArrayBuffer(5 * 8));
    this.extra.set([
      BigInt(CU_LAUNCH_PARAM.BUFFER_POINTER),
      addr(new Uint8Array(this.args)),
      BigInt(CU_LAUNCH_PARAM.BUFFER_SIZE),
      addr(this.size),
      BigInt(CU_LAUNCH_PARAM.END),
    ]);
    this.extraPtr = Deno.UnsafePointer.of(this.extra);
    this.launchFn = cuda().cuLaunchKernel;
  }

  /**
   * Launch `f` on the stream. `kinds[i]` tells how to pack `values[i]`
   * (pointers as bigint device addresses).
   */
  launch(
    name: string,
    f: Deno.PointerValue,
    grid: [number, number, number],
    block: [number, number, number],
    sharedBytes: number,
    kinds: string,
    values: readonly (number | bigint)[],
  ): void {
    const size = packArgs(this.view, kinds, values);
    this.size[0] = BigInt(size);
    const status = this.launchFn(
      f,
      grid[0],
      grid[1],
      grid[2],
      block[0],
      block[1],
      block[2],
      sharedBytes,
      this.stream,
      null,
      this.extraPtr,
    );
    if (status !== 0) throw new CudaError(`cuLaunchKernel(${name})`, status);
  }
}

/**
 * Pack kernel arguments into `view` (little endian, natural alignment) and return the
 * byte size without tail padding. `kinds` has one letter per value: p (u64), i (i32), f (f32).
 */
export function packArgs(
  view: DataView,
  kinds: string,
  values: readonly (number | bigint)[],
): number {
  if (kinds.length !== values.length) {
    throw new Error(`packArgs: ${kinds.length} kinds for ${values.length} values`);
  }
  let off = 0;
  for (let i = 0; i < kinds.length; i++) {
    const v = values[i];
    switch (kinds[i]) {
      case "p":
        off = (off + 7) & ~7;
        view.setBigUint64(off, BigInt(v), true);
        off += 8;
        break;
      case "i":
        off = (off + 3) & ~3;
        view.setInt32(off, Number(v), true);
        off += 4;
        break;
      case "f":
        off = (off + 3) & ~3;
        view.setFloat32(off, Number(v), true);
        off += 4;
        break;
      default:
        throw new Error(`packArgs: unknown kind ${kinds[i]}`);
    }
  }
  // Exactly the end of the last argument: the driver rejects a size with tail padding
  // ("too many resources requested for launch"; see llvm/llvm-project#172249).
  return off;
}
