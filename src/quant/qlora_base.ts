/**
 * What a Llama model needs to keep its base in NF4 (torchtune's `quantize_base=True`): the
 * NF4 store of its decoder linears, loading them from a state dict, and putting their
 * dequantized values back into the state dicts the model saves. Kept here so the model
 * touches NF4 in a few separable lines.
 */
import type { Backend } from "../backend/ops.ts";
import type { StateDict } from "../params/state_dict.ts";
import { TuneError } from "../errors.ts";
import type { ParamLayout } from "../params/layout.ts";
import { layoutWithout, Nf4Store } from "./nf4_store.ts";

/** Options of `createQloraBase`. */
export interface QloraBaseOptions {
  /**
   * The model shards its frozen base over the ranks of `backend.collectives` (the
   * distributed recipes): the NF4 weights too, each layer group's gathered before it runs.
   */
  sharded: boolean;
}

/**
 * The NF4 store for `names` (the decoder linears' weights) and the base layout without them.
 * TuneError for shapes torchao refuses.
 */
export function createQloraBase(
  backend: Backend,
  full: ParamLayout,
  names: readonly string[],
  opts: QloraBaseOptions,
): { nf4: Nf4Store; layout: ParamLayout } {
  const c = backend.collectives;
  const sharding = opts.sharded
    ? { rank: c.rank, worldSize: c.worldSize, groupOf: (n: string) => full.get(n).group }
    : null;
  const tensors = names.map((n) => ({ name: n, shape: full.get(n).shape }));
  const nf4 = new Nf4Store(backend, tensors, sharding);
  return { nf4, layout: layoutWithout(full, new Set(names)) };
}

/** Quantize every NF4 weight from `sd` (TuneError naming the first missing one). */
export function loadNf4Weights(nf4: Nf4Store, sd: StateDict, modelName: string): void {
  for (const name of nf4.names) {
    const t = sd.get(name);
    if (!t) {
      throw new TuneError(
        `checkpoint has no tensor ${name} for model ${modelName}; check the model builder and checkpoint files`,
      );
    }
    nf4.setTensor(name, t);
  }
}

/** `sd` (the base store's tensors) plus the dequantized NF4 weights, in `full` layout order. */
export function withDequantized(sd: StateDict, nf4: Nf4Store, full: ParamLayout): StateDict {
  const out: StateDict = new Map();
  for (const e of full.entries) {
    const t = nf4.has(e.name) ? nf4.getTensor(e.name) : sd.get(e.name);
    if (t) out.set(e.name, t);
  }
  for (const [n, t] of sd) if (!out.has(n)) out.set(n, t);
  return out;
}
