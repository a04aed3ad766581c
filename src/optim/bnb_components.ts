/**
 * `_component_` builders for bitsandbytes' optimizers in torchtune configs:
 * `bitsandbytes.optim.AdamW8bit` / `PagedAdamW8bit` (8-bit blockwise state,
 * src/optim/adamw8bit.ts) and `PagedAdamW` / `PagedAdamW32bit` (fp32 state: AdamW; paging
 * the state through host memory is a CUDA matter, refused there until it exists).
 * Imported (for its side effect) by src/components.ts.
 */
import { registerComponent } from "../config/registry.ts";
import type { ParamSchema } from "../config/schema.ts";
import { TuneError } from "../errors.ts";
import { type AdamWOptions, validateAdamW } from "./adamw.ts";

/** AdamW options plus which bitsandbytes optimizer the config named. */
export interface BnbAdamWOptions extends AdamWOptions {
  /** 8: blockwise 8-bit moments (AdamW8bit); 32: fp32 moments. */
  bits: 8 | 32;
  /** A Paged* optimizer (its state paged between host and GPU memory on CUDA). */
  paged: boolean;
  /** Tensors under this many elements keep fp32 moments (min_8bit_size). */
  minBlockwiseSize: number;
}

const PARAMS: ParamSchema = {
  lr: { type: "float", default: 1e-3, doc: "learning rate" },
  betas: { type: "float[]", default: [0.9, 0.999], doc: "(beta1, beta2)" },
  eps: { type: "float", default: 1e-8, doc: "denominator epsilon" },
  weight_decay: { type: "float", default: 1e-2, doc: "decoupled weight decay" },
  amsgrad: { type: "bool", default: false, doc: "not supported; must be False" },
  min_8bit_size: {
    type: "int",
    default: 4096,
    doc: "tensors with fewer elements keep fp32 moments (8-bit optimizers)",
  },
  percentile_clipping: { type: "int", default: 100, doc: "not supported; must be 100" },
  block_wise: { type: "bool", default: true, doc: "blockwise quantization; must be True" },
};

const DEFAULTS = Object.fromEntries(
  Object.entries(PARAMS).map(([k, v]) => [k, "default" in v ? v.default : undefined]),
);

function build(bits: 8 | 32, paged: boolean) {
  return (a: Record<string, unknown>): BnbAdamWOptions => {
    a = { ...DEFAULTS, ...a };
    if (a.amsgrad) throw new TuneError("optimizer.amsgrad=True is not supported; set it to False");
    if (a.percentile_clipping !== 100) {
      throw new TuneError(
        `optimizer.percentile_clipping=${a.percentile_clipping} is not supported; set it to 100 and use clip_grad_norm`,
      );
    }
    if (!a.block_wise) {
      throw new TuneError("optimizer.block_wise=False is not supported; set it to True");
    }
    const betas = a.betas as number[];
    if (betas.length !== 2) {
      throw new TuneError(`optimizer.betas needs two numbers, got [${betas.join(", ")}]`);
    }
    const o: BnbAdamWOptions = {
      lr: a.lr as number,
      betas: [betas[0], betas[1]],
      eps: a.eps as number,
      weightDecay: a.weight_decay as number,
      bits,
      paged,
      minBlockwiseSize: a.min_8bit_size as number,
    };
    validateAdamW(o);
    return o;
  };
}

for (
  const [name, bits, paged, doc] of [
    ["AdamW8bit", 8, false, "AdamW with blockwise 8-bit moments (about 2 bytes a parameter)"],
    ["PagedAdamW8bit", 8, true, "AdamW8bit whose state lives in host memory"],
    ["PagedAdamW", 32, true, "AdamW whose fp32 state is paged from host memory (CPU: AdamW)"],
    ["PagedAdamW32bit", 32, true, "the same as PagedAdamW"],
  ] as const
) {
  registerComponent<BnbAdamWOptions>({
    name: `bitsandbytes.optim.${name}`,
    kind: "optimizer",
    doc,
    params: PARAMS,
    build: build(bits, paged),
  });
}

/** Whether optimizer options ask for 8-bit state (a bitsandbytes 8-bit optimizer). */
export function isEightBit(o: AdamWOptions): boolean {
  return (o as Partial<BnbAdamWOptions>).bits === 8;
}
