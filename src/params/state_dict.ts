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
 * reads `data` sees an ordinary tensor; the copy-free paths use `fillTensor`/`tensorValues`.
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
  /** Write the values into `dst`. */
  fill(dst: Float32Array): void;
  /**
   * The values, freshly made or a live view of memory the caller must not write; the caller
   * does not keep it.
   */
  values(): Float32Array;
}

export type StateDict = Map<string, HostTensor>;

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * A lazy tensor from `fill` (write the values into an array) and/or `values` (return them);
 * one is derived from the other when absent. `data` is made on first use and then kept.
 */
export function lazyTensor(
  shape: number[],
  how: { fill?: (dst: Float32Array) => void; values?: () => Float32Array },
  sourceDtype?: HostTensor["sourceDtype"],
): HostTensor {
  const n = numel(shape);
  const fill = how.fill ?? ((dst: Float32Array) => dst.set(how.values!()));
  const values = how.values ?? (() => {
    const out = new Float32Array(n);
    fill(out);
    return out;
  });
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
    value: {
      fill: (dst: Float32Array) => data ? dst.set(data) : fill(dst),
      values: () => data ?? values(),
    } satisfies LazyValues,
    enumerable: false,
  });
  return t;
}

/** The values of `t` to read (not write, not keep): a lazy tensor's are made for this call. */
export function tensorValues(t: HostTensor): Float32Array {
  return t.lazy ? t.lazy.values() : t.data;
}

/** Copy the values of `t` into `dst` (a lazy tensor writes them there directly). */
export function fillTensor(t: HostTensor, dst: Float32Array): void {
  if (t.lazy) t.lazy.fill(dst);
  else dst.set(t.data);
}

/**
 * `t` with its values transformed by `f` (which returns a new array, not changing its input):
 * lazy when `t` is, so nothing is computed before the values are used.
 */
export function mapTensor(t: HostTensor, f: (values: Float32Array) => Float32Array): HostTensor {
  if (!t.lazy) return { shape: t.shape, data: f(t.data), sourceDtype: t.sourceDtype };
  return lazyTensor(t.shape, { values: () => f(tensorValues(t)) }, t.sourceDtype);
}
