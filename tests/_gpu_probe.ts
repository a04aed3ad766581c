/**
 * Test helper: whether this machine has CUDA GPUs and NCCL, so GPU-only tests can be
 * `ignore`d elsewhere. Opens libcuda (TUNE_LIBCUDA overrides) only to count devices.
 */

/** Number of CUDA devices the driver reports (0 without a driver or GPU). */
export function gpuCount(): number {
  try {
    const lib = Deno.dlopen(Deno.env.get("TUNE_LIBCUDA") ?? "libcuda.so.1", {
      cuInit: { parameters: ["u32"], result: "i32" },
      cuDeviceGetCount: { parameters: ["buffer"], result: "i32" },
    });
    const n = new Int32Array(1);
    const ok = lib.symbols.cuInit(0) === 0 && lib.symbols.cuDeviceGetCount(n) === 0;
    lib.close();
    return ok ? n[0] : 0;
  } catch {
    return 0;
  }
}

/** Whether libnccl loads through tune's own binding. */
export async function ncclPresent(): Promise<boolean> {
  try {
    const { nccl } = await import("../ffi/nccl.ts");
    nccl();
    return true;
  } catch {
    return false;
  }
}
