/**
 * The common currency between checkpoint formats and models: named host tensors in
 * tune's (torchtune's) parameter names, see src/models/llama/config.ts. It lives in params/ because the flat
 * parameter store (store.ts, layout.ts) reads and writes it, below the checkpoint formats.
 * Data is always fp32 on the host; `sourceDtype` remembers what the file held so a
 * writer can keep it.
 *
 * A tensor may be lazy (`lazyTensor`): its values are produced when used — read from a file
 * straight into a parameter buffer, or read from a model's buffer (merged with an adapter)
 * while a writer streams it out — so a checkpoint load or save never holds a second copy of
 * the whole model. Its `data` still works (computed on first use and kept), so code that
 * reads `data` sees an ordinary tensor; the copy-free paths use `fillTensor`.
 */
export interface HostTensor {
  shape: number[];
  data: Float32Array;
  sourceDtype?: "f32" | "bf16" | "f16";
  /**
   * Set on lazy tensors (see `lazyTensor`; not enumerable, so a spread copy is an ordinary
   * tensor); absent on ordinary ones.
   */
  lazy?: LazyValues;
}

/** How a lazy tensor produces its values (numel(shape) of them). */
export interface LazyValues {
  /** Write the values into `dst` (an array the caller owns: a parameter buffer, a reused scratch). */
  fill(dst: Float32Array): void;
}

export type StateDict = Map<string, HostTensor>;

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * A lazy tensor whose values `fill` writes into a given array. `data` is made on first use
 * and then kept (later fills copy it).
 */
export function lazyTensor(
  shape: number[],
  fill: (dst: Float32Array) => void,
  sourceDtype?: HostTensor["sourceDtype"],
): HostTensor {
  const n = numel(shape);
  let data: Float32Array | null = null;
  const t: HostTensor = {
    shape,
    get data(): Float32Array {
      if (!data) {
        data = new Float32Array(n);
        fill(data);
      }
      return data;
    },
  };
  if (sourceDtype) t.sourceDtype = sourceDtype;
  // not enumerable: `{ ...t, data: other }` (a changed copy) must not carry the old values
  Object.defineProperty(t, "lazy", {
    value: { fill: (dst: Float32Array) => data ? dst.set(data) : fill(dst) } satisfies LazyValues,
    enumerable: false,
  });
  return t;
}

/** Copy the values of `t` into `dst` (a lazy tensor writes them there directly). */
export function fillTensor(t: HostTensor, dst: Float32Array): void {
  if (t.lazy) t.lazy.fill(dst);
  else dst.set(t.data);
}

/**
 * `t` with its values transformed in place by `f` (given a copy of them to change): lazy when
 * `t` is, so nothing is computed, and nothing allocated, before the values are filled in.
 */
export function mapTensor(t: HostTensor, f: (values: Float32Array) => void): HostTensor {
  if (!t.lazy) {
    const data = new Float32Array(t.data);
    f(data);
    return { shape: t.shape, data, sourceDtype: t.sourceDtype };
  }
  return lazyTensor(t.shape, (dst) => {
    t.lazy!.fill(dst);
    f(dst);
  }, t.sourceDtype);
}

/** A Float32Array of `n` elements from a grow-only buffer, reused by every call of `slot`. */
export function reusableF32(slot: ReusableSlot, n: number): Float32Array {
  let b = REUSABLE.get(slot);
  if (!b || b.length < n) {
    b = new Float32Array(n);
    REUSABLE.set(slot, b);
  }
  return b.subarray(0, n);
}

/** The users of `reusableF32`, each with its own buffer (never two live at once per slot). */
export type ReusableSlot = "write" | "permute" | "upload";

// Kept for the process: fresh memory costs page faults on every first touch, reuse does not.
const REUSABLE = new Map<ReusableSlot, Float32Array>();
