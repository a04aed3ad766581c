/** Questions about the machine's GPUs that are asked before a CUDA backend exists. */
import { cuda } from "../../../ffi/cuda.ts";

/**
 * Number of GPUs this process sees (CUDA_VISIBLE_DEVICES applied by the driver); 0 when the
 * driver does not initialise. Throws a one-line TuneError when libcuda cannot be opened.
 */
export function visibleGpuCount(): number {
  const lib = cuda();
  const n = new Int32Array(1);
  if (lib.cuInit(0) !== 0 || lib.cuDeviceGetCount(n) !== 0) return 0;
  return n[0];
}
