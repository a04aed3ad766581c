/**
 * The NF4 base weights of a QLoRA model on a device: every decoder layer's linear weights
 * (q/k/v/output_proj, w1/w2/w3), as torchtune's `quantize_base=True` builders quantize them
 * (embeddings, norms and the output projection stay in the ordinary base store). Each weight
 * is quantized once on the host as it is loaded (src/quant/nf4.ts) and kept in NF4 on the
 * device; saving dequantizes it again.
 */
import type { Backend, DeviceBuffer, Nf4Weight } from "../backend/ops.ts";
import type { HostTensor } from "../params/state_dict.ts";
import { type GroupDecl, ParamLayout } from "../params/layout.ts";
import { checkShape } from "../params/layout.ts";
import {
  checkNf4Shape,
  NF4_BLOCK,
  NF4_MULTIPLE,
  nf4Bytes,
  nf4Dequantize,
  type Nf4Host,
  nf4Quantize,
} from "./nf4.ts";

/** One NF4 weight's device buffers (the mean is set when the weight is loaded). */
class DeviceNf4 implements Nf4Weight {
  readonly codes: DeviceBuffer; // (n/8) i32
  readonly scalers: DeviceBuffer; // (n/256) i32
  readonly factors: DeviceBuffer; // (n/16384) f32
  mean = 0;
  dtype: "f32" | "bf16" = "f32";

  constructor(be: Backend, readonly rows: number, readonly cols: number) {
    const n = rows * cols;
    this.codes = be.alloc(n / 8, "i32");
    this.scalers = be.alloc(n / 256, "i32");
    this.factors = be.alloc(n / NF4_MULTIPLE, "f32");
  }
}

/** The bytes of `a` as an Int32Array (a copy when `a` is not 4-byte aligned). */
function asInt32(a: Uint8Array | Int8Array): Int32Array {
  if (a.byteOffset % 4 === 0 && a.byteLength % 4 === 0) {
    return new Int32Array(a.buffer, a.byteOffset, a.byteLength / 4);
  }
  const c = new Uint8Array(Math.ceil(a.byteLength / 4) * 4);
  c.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  return new Int32Array(c.buffer);
}

/** Names of the weights a `quantize_base` model keeps in NF4, from the full base layout. */
export function nf4WeightNames(layout: ParamLayout, linearPrefixes: readonly string[]): string[] {
  return linearPrefixes.map((p) => `${p}.weight`).filter((n) => layout.has(n));
}

/** `layout` without the tensors named in `without` (groups keep their order). */
export function layoutWithout(layout: ParamLayout, without: ReadonlySet<string>): ParamLayout {
  const groups: GroupDecl[] = layout.groups.map((g) => ({
    name: g.name,
    tensors: g.entries.filter((e) => !without.has(e.name)).map((e) => ({
      name: e.name,
      shape: [...e.shape],
    })),
  }));
  return new ParamLayout(groups);
}

/** NF4 weights by name, on one backend. */
export class Nf4Store {
  readonly #weights = new Map<string, DeviceNf4>();
  readonly #shapes = new Map<string, number[]>();

  /** Allocate NF4 buffers for `tensors` (TuneError, torchao's reason, for shapes it refuses). */
  constructor(
    readonly backend: Backend,
    tensors: readonly { name: string; shape: readonly number[] }[],
  ) {
    for (const t of tensors) {
      checkNf4Shape(t.name, t.shape);
      const [rows, cols] = t.shape.length === 2 ? t.shape : [1, t.shape[0]];
      this.#weights.set(t.name, new DeviceNf4(backend, rows, cols));
      this.#shapes.set(t.name, [...t.shape]);
    }
  }

  /** Names of the NF4 weights, in construction order. */
  get names(): string[] {
    return [...this.#weights.keys()];
  }

  /** Whether `name` is kept in NF4 here. */
  has(name: string): boolean {
    return this.#weights.has(name);
  }

  /** The device weight `name` (for the NF4 matrix products). */
  weight(name: string): Nf4Weight {
    const w = this.#weights.get(name);
    if (!w) throw new Error(`no NF4 weight ${name}`);
    return w;
  }

  /** Quantize a host tensor (in its checkpoint dtype's arithmetic) into `name`. */
  setTensor(name: string, t: HostTensor): void {
    const shape = this.#shapes.get(name);
    if (!shape) throw new Error(`no NF4 weight ${name}`);
    checkShape(name, shape, t.shape);
    this.setQuantized(
      name,
      nf4Quantize(t.data, t.shape, { dtype: t.sourceDtype === "bf16" ? "bf16" : "f32", name }),
    );
  }

  /** Upload an already quantized tensor into `name`. */
  setQuantized(name: string, q: Nf4Host): void {
    const w = this.#weights.get(name)!;
    const be = this.backend;
    be.upload(w.codes, asInt32(q.codes));
    be.upload(w.scalers, asInt32(q.scalers));
    be.upload(w.factors, q.factors);
    w.mean = q.mean;
    w.dtype = q.dtype;
  }

  /** The NF4 pieces of `name`, downloaded. */
  getQuantized(name: string): Nf4Host {
    const w = this.#weights.get(name)!;
    const be = this.backend;
    const n = w.rows * w.cols;
    const codes = be.download(w.codes) as Int32Array;
    const scalers = be.download(w.scalers) as Int32Array;
    return {
      shape: [...this.#shapes.get(name)!],
      dtype: w.dtype,
      codes: new Uint8Array(codes.buffer, codes.byteOffset, n / 2),
      scalers: new Int8Array(scalers.buffer, scalers.byteOffset, n / NF4_BLOCK),
      factors: be.download(w.factors) as Float32Array,
      mean: w.mean,
    };
  }

  /** Weight `name` dequantized on the host (torchtune saves a QLoRA model this way). */
  getTensor(name: string): HostTensor {
    const q = this.getQuantized(name);
    return {
      shape: q.shape,
      data: nf4Dequantize(q),
      ...(q.dtype === "bf16" ? { sourceDtype: "bf16" as const } : {}),
    };
  }

  /** Bytes of every NF4 weight on the device (codes, scalers, factors; the means on the host). */
  bytes(): number {
    let b = 0;
    for (const w of this.#weights.values()) b += nf4Bytes(w.rows * w.cols) - 4;
    return b;
  }

  /** Elements the NF4 weights stand for. */
  numel(): number {
    let n = 0;
    for (const w of this.#weights.values()) n += w.rows * w.cols;
    return n;
  }

  /** Release every buffer. */
  free(): void {
    for (const w of this.#weights.values()) {
      this.backend.free(w.codes);
      this.backend.free(w.scalers);
      this.backend.free(w.factors);
    }
    this.#weights.clear();
  }
}
