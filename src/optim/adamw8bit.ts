/**
 * 8-bit AdamW as bitsandbytes' AdamW8bit / PagedAdamW8bit update it (its blockwise optimizer
 * step): both moments live as 8-bit codes of blocks of 256 values (src/optim/blockwise8.ts;
 * signed map for m, unsigned for v) plus one fp32 absmax per block, about 2 bytes a parameter
 * against AdamW's 8. A step dequantizes a tensor's moments, takes the AdamW step in fp32
 *   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
 *   p = p (1 - lr wd) - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * and quantizes the moments again. Tensors under `minBlockwiseSize` elements (bitsandbytes'
 * min_8bit_size, 4096) keep fp32 moments, as bitsandbytes does. The state lives in host
 * memory and the step runs there, one tensor at a time (on CUDA: paged in per tensor).
 */
import type { Backend } from "../backend/ops.ts";
import type { StateDict } from "../params/state_dict.ts";
import { TuneError } from "../errors.ts";
import type { ParamEntry, ParamGroup } from "../params/layout.ts";
import type { ParamStore } from "../params/store.ts";
import { type AdamWOptions, validateAdamW } from "./adamw.ts";
import {
  BLOCK8,
  dequantizeBlockwise,
  quantizeBlockwise,
  SIGNED_MAP,
  UNSIGNED_MAP,
} from "./blockwise8.ts";

/** Options of AdamW8bit: AdamW's plus bitsandbytes' min_8bit_size. */
export interface AdamW8bitOptions extends AdamWOptions {
  /** Tensors with fewer elements keep fp32 moments (bitsandbytes' min_8bit_size, 4096). */
  minBlockwiseSize?: number;
}

/** The moments of one tensor: 8-bit codes + block absmax, or fp32. */
type Moments =
  | { kind: "8bit"; m: Uint8Array; ma: Float32Array; v: Uint8Array; va: Float32Array }
  | { kind: "32bit"; m: Float32Array; v: Float32Array };

/** 8-bit AdamW over one trainable store. */
export class AdamW8bit {
  /** Number of steps taken (the next step is stepCount + 1). */
  stepCount = 0;
  readonly #state = new Map<string, Moments>();
  /** The dequantized moments of the tensor being updated (grown to the largest). */
  readonly #tmp: [Float32Array, Float32Array] = [new Float32Array(0), new Float32Array(0)];

  constructor(
    readonly backend: Backend,
    readonly store: ParamStore,
    readonly options: AdamW8bitOptions,
  ) {
    validateAdamW(options);
    if (!store.trainable) throw new Error("AdamW8bit needs a trainable store");
    if (store.windows) {
      throw new TuneError(
        "8-bit AdamW does not shard its state across ranks yet; use torch.optim.AdamW in the distributed recipes",
      );
    }
    const min = options.minBlockwiseSize ?? 4096;
    for (const e of store.layout.entries) {
      const n = e.length, blocks = Math.ceil(n / BLOCK8);
      this.#state.set(
        e.name,
        n >= min
          ? {
            kind: "8bit",
            // bitsandbytes' initial state: codes 0 and absmax 0 (moments of 0)
            m: new Uint8Array(n),
            ma: new Float32Array(blocks),
            v: new Uint8Array(n),
            va: new Float32Array(blocks),
          }
          : { kind: "32bit", m: new Float32Array(n), v: new Float32Array(n) },
      );
    }
  }

  /** One update with learning rate `lr` (default: options.lr) from the store's gradients. */
  step(lr: number = this.options.lr): void {
    this.stepCount++;
    // one tensor at a time: only its values and gradient are copied to the host
    for (const e of this.store.layout.entries) this.#stepTensor(e, lr);
  }

  /**
   * Group `g`'s share of step `stepCount` (the caller advanced it), for optimizer_in_bwd:
   * the update is per tensor, so the groups' updates together are `step()`'s, bit for bit.
   */
  stepGroup(g: ParamGroup, lr: number): void {
    for (const e of g.entries) this.#stepTensor(e, lr);
  }

  #stepTensor(e: ParamEntry, lr: number): void {
    const be = this.backend, s = this.store;
    const p = be.download(s.param(e.name)) as Float32Array; // (numel)
    const g = be.download(s.grad(e.name)!) as Float32Array; // (numel)
    this.#update(this.#state.get(e.name)!, p, g, lr);
    be.upload(s.params, p, e.offset);
  }

  #update(st: Moments, p: Float32Array, g: Float32Array, lr: number): void {
    const { betas: [b1, b2], eps, weightDecay } = this.options;
    const n = p.length;
    const m = st.kind === "8bit" ? this.#scratch(0, n) : st.m;
    const v = st.kind === "8bit" ? this.#scratch(1, n) : st.v;
    if (st.kind === "8bit") {
      dequantizeBlockwise(st.m, st.ma, SIGNED_MAP, m);
      dequantizeBlockwise(st.v, st.va, UNSIGNED_MAP, v);
    }
    const f = Math.fround;
    const fb1 = f(b1), fb2 = f(b2), c1 = f(1 - b1), c2 = f(1 - b2);
    const t = this.stepCount;
    const bc1 = 1 - Math.pow(b1, t), bc2 = 1 - Math.pow(b2, t);
    const sqrtBc2 = f(Math.sqrt(bc2)), feps = f(eps);
    const decay = f(1 - lr * weightDecay), stepSize = f(-lr / bc1);
    for (let i = 0; i < n; i++) {
      const gi = g[i];
      m[i] = f(m[i] * fb1) + f(gi * c1);
      v[i] = f(v[i] * fb2) + f(f(c2 * gi) * gi);
      const denom = f(f(Math.sqrt(v[i])) / sqrtBc2) + feps;
      let pi = p[i];
      if (weightDecay > 0) pi = f(pi * decay);
      p[i] = pi + f(stepSize * f(m[i] / f(denom)));
    }
    if (st.kind === "8bit") {
      quantizeBlockwise(m, SIGNED_MAP, st.m, st.ma);
      quantizeBlockwise(v, UNSIGNED_MAP, st.v, st.va);
    }
  }

  /** Reusable fp32 scratch `k` (the dequantized m or v) of n elements. */
  #scratch(k: 0 | 1, n: number): Float32Array {
    if (this.#tmp[k].length < n) this.#tmp[k] = new Float32Array(n);
    return this.#tmp[k].subarray(0, n);
  }

  /** Bytes of optimizer state (codes, block absmaxes, fp32 moments of small tensors). */
  stateBytes(): number {
    let b = 0;
    for (const st of this.#state.values()) {
      b += st.kind === "8bit"
        ? st.m.length * 2 + (st.ma.length + st.va.length) * 4
        : st.m.length * 8;
    }
    return b;
  }

  /** The moments of tensor `name`, dequantized (for tests and inspection). */
  moments(name: string): { m: Float32Array; v: Float32Array } {
    const st = this.#state.get(name)!;
    if (st.kind === "32bit") return { m: st.m.slice(), v: st.v.slice() };
    const m = new Float32Array(st.m.length), v = new Float32Array(st.v.length);
    dequantizeBlockwise(st.m, st.ma, SIGNED_MAP, m);
    dequantizeBlockwise(st.v, st.va, UNSIGNED_MAP, v);
    return { m, v };
  }

  /** The whole state as fp32 tensors (codes as exact small integers), for recipe_state. */
  exportState(): StateDict {
    const sd: StateDict = new Map();
    const put = (k: string, a: Float32Array | Uint8Array) =>
      sd.set(k, { shape: [a.length], data: Float32Array.from(a) });
    for (const [name, st] of this.#state) {
      if (st.kind === "8bit") {
        put(`adamw8bit.${name}.m_codes`, st.m);
        put(`adamw8bit.${name}.m_absmax`, st.ma);
        put(`adamw8bit.${name}.v_codes`, st.v);
        put(`adamw8bit.${name}.v_absmax`, st.va);
      } else {
        put(`adamw8bit.${name}.m`, st.m);
        put(`adamw8bit.${name}.v`, st.v);
      }
    }
    return sd;
  }

  /** Restore `exportState()`'s tensors (TuneError when they belong to another model). */
  importState(sd: StateDict, step: number): void {
    const get = (k: string, n: number) => {
      const t = sd.get(k);
      if (!t || t.data.length !== n) {
        throw new TuneError(
          `optimizer state has no ${k} of ${n} values; resume with the same model, LoRA settings and optimizer`,
        );
      }
      return t.data;
    };
    for (const [name, st] of this.#state) {
      if (st.kind === "8bit") {
        st.m.set(get(`adamw8bit.${name}.m_codes`, st.m.length));
        st.ma.set(get(`adamw8bit.${name}.m_absmax`, st.ma.length));
        st.v.set(get(`adamw8bit.${name}.v_codes`, st.v.length));
        st.va.set(get(`adamw8bit.${name}.v_absmax`, st.va.length));
      } else {
        st.m.set(get(`adamw8bit.${name}.m`, st.m.length));
        st.v.set(get(`adamw8bit.${name}.v`, st.v.length));
      }
    }
    this.stepCount = step;
  }
}
