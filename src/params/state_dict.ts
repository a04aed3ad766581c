/**
 * The common currency between checkpoint formats and models: named host tensors in
 * tune's (torchtune's) parameter names, see src/models/llama/config.ts. It lives in params/ because the flat
 * parameter store (store.ts, layout.ts) reads and writes it, below the checkpoint formats.
 * Data is always fp32 on the host; `sourceDtype` remembers what the file held so a
 * writer can keep it.
 */
export interface HostTensor {
  shape: number[];
  data: Float32Array;
  sourceDtype?: "f32" | "bf16" | "f16";
}

export type StateDict = Map<string, HostTensor>;

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}
