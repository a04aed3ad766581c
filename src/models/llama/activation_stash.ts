/**
 * Where a decoder keeps what each layer's backward needs between its forward and backward:
 * the residual stream entering the layer and, without activation checkpointing, the
 * layer's activations (with it, one shared set that backward recomputes into).
 *
 * On the device (`deviceStash`) every layer owns its buffers for the whole step. With
 * activation offloading (`offloadStash`, torchtune's enable_activation_offloading) they live
 * in host memory in between: layers take their buffers from rings (3 residual buffers, 2
 * activation sets), after layer l's forward its input and activations are copied to
 * page-locked host memory on the backend's side stream, and before layer l's backward its
 * copy comes back, queued one layer ahead so it overlaps layer l+1's backward. Events order
 * everything (src/backend/offload.ts): a ring buffer is overwritten only after its copy to
 * the host is done, and read in backward only after its copy back is. The last layer, whose
 * backward comes first, stays on the device. The values are the same bits either way.
 */
import type { Backend, DeviceBuffer, DType } from "../../backend/ops.ts";
import {
  type ActivationOffloader,
  activationOffloader,
  type CopyEvent,
  type HostBuffer,
  packedBytes,
} from "../../backend/offload.ts";
import { TuneError } from "../../errors.ts";
import {
  type ActDims,
  type Allocator,
  allocLayerActs,
  type LayerActs,
  type LayerLinear,
} from "../../modules/activations.ts";

/** What layer l's forward writes and its backward reads. */
export interface LayerStash {
  /** (N, C) the residual stream entering layer l; l = L is the decoder's output. */
  resid(l: number): DeviceBuffer;
  /** Layer l's activation buffers. */
  acts(l: number): LayerActs;
  /** Training: layer l's forward is queued (its saved values may leave the device). */
  afterForward(l: number): void;
  /** Training: layer l's backward is next (its saved values must be on the device). */
  beforeBackward(l: number): void;
  /** Bytes of host memory holding offloaded activations (0 on the device). */
  readonly hostBytes: number;
  /** Release the host memory and the side stream (the device buffers are the allocator's). */
  free(): void;
}

/** What the stash is sized for. */
export interface StashOptions {
  dims: ActDims;
  /** LoRA rank of each adapted linear (their hidden activations are saved too). */
  ranks: Partial<Record<LayerLinear, number>>;
  act: DType;
  nLayers: number;
  training: boolean;
  checkpointing: boolean;
  /** Keep saved activations in host memory between forward and backward (training only). */
  offload: boolean;
  /** Floats of each set's kept attention probabilities (0: none; see attentionProbsFloats). */
  probs: number;
}

/**
 * Most floats of kept attention probabilities per model (256 MiB): keeping them spares the
 * backward its recompute (the scores product and an exp per score, most of an attention
 * backward at small head sizes), but they grow with T^2 per head, so long sequences and
 * deep models recompute instead.
 */
const PROBS_BUDGET = 1 << 26;

/**
 * Floats of each activation set's kept attention probabilities for `sets` sets (one per
 * layer, or one shared with checkpointing): the backend's size when it keeps them and all
 * sets fit PROBS_BUDGET, else 0.
 */
export function attentionProbsFloats(be: Backend, d: ActDims, sets: number): number {
  const n = be.attentionProbsSize?.(d.B, d.T, d.NH) ?? 0;
  return n * sets <= PROBS_BUDGET ? n : 0;
}

/** The stash of a model: on the device, or offloaded to host memory. */
export function createLayerStash(be: Backend, al: Allocator, o: StashOptions): LayerStash {
  if (!o.offload) return deviceStash(al, o);
  if (!o.training) throw new Error("activation offloading needs a training model");
  const off = activationOffloader(be);
  if (off === null) {
    throw new TuneError(
      `activation offloading needs a GPU backend: on device=${be.name} activations already live in host memory`,
    );
  }
  return new OffloadStash(off, al, o);
}

/** A ring of layer activation sets (one shared set with checkpointing). */
function actsRing(al: Allocator, o: StashOptions, n: number): LayerActs[] {
  const category = o.checkpointing ? "scratch" : "activations";
  return Array.from(
    { length: n },
    () => allocLayerActs(al, category, o.dims, o.ranks, o.act, o.probs),
  );
}

/** Rows times channels of the residual stream. */
function residLength(o: StashOptions): number {
  return o.dims.B * o.dims.T * o.dims.C;
}

/** Every layer's buffers on the device for the whole step (inference: one shared set). */
function deviceStash(al: Allocator, o: StashOptions): LayerStash {
  // inference needs no layer's activations after its forward: one shared set
  const acts = actsRing(al, o, o.checkpointing || !o.training ? 1 : o.nLayers);
  // inference: the residual stream ping-pongs between two (N, C) buffers
  const n = o.training ? o.nLayers + 1 : 2;
  const resid = Array.from({ length: n }, () => al.alloc("activations", residLength(o), o.act));
  return {
    resid: (l) => resid[l % n],
    acts: (l) => acts[l % acts.length],
    afterForward: () => {},
    beforeBackward: () => {},
    hostBytes: 0,
    free: () => {},
  };
}

/** Every DeviceBuffer of a layer's activations (nested groups and LoRA hiddens included). */
export function actsBuffers(a: LayerActs): DeviceBuffer[] {
  const out: DeviceBuffer[] = [];
  const walk = (v: unknown): void => {
    if (v === undefined || v === null || typeof v !== "object") return;
    if ("dtype" in v && "length" in v) out.push(v as DeviceBuffer);
    else for (const x of Object.values(v)) walk(x);
  };
  walk(a);
  return out;
}

/** Rings on the device, layers 0..L-2 in host memory between their forward and backward. */
class OffloadStash implements LayerStash {
  readonly #off: ActivationOffloader;
  readonly #resid: DeviceBuffer[];
  readonly #acts: LayerActs[];
  readonly #ckpt: boolean;
  readonly #L: number;
  /** Per offloaded layer: its host copy, and the events ending its copies there and back. */
  readonly #host: HostBuffer[] = [];
  readonly #toHost: CopyEvent[] = [];
  readonly #toDevice: CopyEvent[] = [];

  constructor(off: ActivationOffloader, al: Allocator, o: StashOptions) {
    this.#off = off;
    this.#ckpt = o.checkpointing;
    const L = this.#L = o.nLayers;
    // layer l reads resid[l] and writes resid[l+1] while resid[l-1] goes to the host
    this.#resid = Array.from(
      { length: Math.min(3, L + 1) },
      () => al.alloc("activations", residLength(o), o.act),
    );
    // layer l writes its set while layer l-1's goes to the host
    this.#acts = actsRing(al, o, o.checkpointing ? 1 : Math.min(2, L));
    for (let l = 0; l < L - 1; l++) {
      this.#host.push(off.allocHost(packedBytes(this.#saved(l).map(bytesOf))));
      this.#toHost.push(off.event());
      this.#toDevice.push(off.event());
    }
  }

  get hostBytes(): number {
    return this.#off.hostBytes;
  }

  resid(l: number): DeviceBuffer {
    return this.#resid[l % this.#resid.length];
  }

  acts(l: number): LayerActs {
    return this.#acts[l % this.#acts.length];
  }

  afterForward(l: number): void {
    if (l < this.#L - 1) this.#off.toHost(this.#saved(l), this.#host[l], this.#toHost[l]);
    // layer l+1 overwrites the ring buffers of layer l-1: their copy must be done
    if (l >= 1 && l + 1 < this.#L) this.#off.waitFor(this.#toHost[l - 1]);
  }

  beforeBackward(l: number): void {
    // bring layer l-1 back while layer l runs (compute is done with its ring buffers:
    // they last held layers l+1 and l+2)
    if (l >= 1) this.#off.toDevice(this.#host[l - 1], this.#saved(l - 1), this.#toDevice[l - 1]);
    if (l < this.#L - 1) this.#off.waitFor(this.#toDevice[l]);
  }

  free(): void {
    this.#off.release();
  }

  /** What layer l's backward reads: its input, and its activations unless recomputed. */
  #saved(l: number): DeviceBuffer[] {
    const input = this.resid(l);
    return this.#ckpt ? [input] : [input, ...actsBuffers(this.acts(l))];
  }
}

function bytesOf(b: DeviceBuffer): number {
  return b.length * (b.dtype === "bf16" ? 2 : 4);
}
