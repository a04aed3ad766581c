/**
 * `_component_` builders of src/optim, registered with src/config/registry.ts.
 * Imported (for its side effect) by src/components.ts.
 */
import { registerComponent } from "../config/registry.ts";
import { TuneError } from "../errors.ts";
import { ADAMW_DEFAULTS, type AdamWOptions, validateAdamW } from "./adamw.ts";
import type { ParamSchema } from "../config/schema.ts";
import type { CrossEntropyLoss } from "./loss.ts";
import type { CosineWithWarmup } from "./lr_schedule.ts";

/** torch.optim.AdamW: builds the options; the recipe binds them to `model.trainable`. */
export const adamwComponent = registerComponent<AdamWOptions>({
  name: "torch.optim.AdamW",
  aliases: ["AdamW", "torchtune.training.AdamW", "tune.optim.AdamW"],
  kind: "optimizer",
  doc:
    "AdamW with decoupled weight decay (PyTorch semantics), one fused step over the trainable buffer",
  params: {
    lr: { type: "float", default: ADAMW_DEFAULTS.lr, doc: "learning rate" },
    weight_decay: {
      type: "float",
      default: ADAMW_DEFAULTS.weightDecay,
      doc: "decoupled weight decay",
    },
    betas: { type: "float[]", default: [...ADAMW_DEFAULTS.betas], doc: "(beta1, beta2)" },
    eps: { type: "float", default: ADAMW_DEFAULTS.eps, doc: "denominator epsilon" },
    fused: {
      type: "bool",
      default: false,
      doc: "accepted for torchtune configs; every step is fused here",
    },
    amsgrad: { type: "bool", default: false, doc: "not supported; must be False" },
  },
  build(args) {
    if (args.amsgrad) {
      throw new TuneError("optimizer.amsgrad=True is not supported; set it to False");
    }
    const betas = args.betas as number[];
    if (betas.length !== 2) {
      throw new TuneError(`optimizer.betas needs two numbers, got [${betas.join(", ")}]`);
    }
    const o: AdamWOptions = {
      lr: args.lr as number,
      weightDecay: args.weight_decay as number,
      betas: [betas[0], betas[1]],
      eps: args.eps as number,
    };
    validateAdamW(o);
    return o;
  },
});

/** torchtune's cosine schedule with linear warmup. */
export const cosineScheduleComponent = registerComponent<CosineWithWarmup>({
  name: "torchtune.training.lr_schedulers.get_cosine_schedule_with_warmup",
  aliases: [
    "torchtune.modules.get_cosine_schedule_with_warmup",
    "get_cosine_schedule_with_warmup",
  ],
  kind: "lr_scheduler",
  doc: "linear warmup from 0, then cosine decay to 0 over the remaining training steps",
  params: {
    num_warmup_steps: { type: "int", required: true, doc: "steps of linear warmup" },
    num_cycles: { type: "float", default: 0.5, doc: "cosine cycles (0.5 = one decay to 0)" },
  },
  build(args) {
    const w = args.num_warmup_steps as number;
    if (!Number.isInteger(w) || w < 0) {
      throw new TuneError(`lr_scheduler.num_warmup_steps must be a non-negative integer, got ${w}`);
    }
    return { numWarmupSteps: w, numCycles: args.num_cycles as number };
  },
});

function buildLoss(args: Record<string, unknown>): CrossEntropyLoss {
  const chunks = (args.num_output_chunks as number | undefined) ?? 1;
  if (!Number.isInteger(chunks) || chunks < 1) {
    throw new TuneError(`loss.num_output_chunks must be a positive integer, got ${chunks}`);
  }
  if (args.reduction !== undefined && args.reduction !== "mean") {
    throw new TuneError(`loss.reduction=${args.reduction} is not supported; use mean`);
  }
  return {
    kind: "cross_entropy",
    ignoreIndex: args.ignore_index as number,
    numOutputChunks: chunks,
  };
}

/** The keys of torchtune's chunked cross-entropy losses (CEWithChunked..., LinearCrossEntropy). */
const CHUNKED_LOSS_PARAMS = {
  num_output_chunks: {
    type: "int",
    default: 8,
    doc: "chunks of tokens the output projection and loss run in (fewer logits in memory)",
  },
  ignore_index: { type: "int", default: -100, doc: "label value that is not counted" },
} as const satisfies ParamSchema;

/** torch.nn.CrossEntropyLoss (mean over non-ignored tokens). */
export const crossEntropyComponent = registerComponent<CrossEntropyLoss>({
  name: "torch.nn.CrossEntropyLoss",
  aliases: ["CrossEntropyLoss"],
  kind: "loss",
  doc: "cross-entropy over tokens, mean over labels that are not ignore_index",
  params: {
    ignore_index: { type: "int", default: -100, doc: "label value that is not counted" },
    reduction: { type: "string", default: "mean", choices: ["mean"], doc: "only mean" },
  },
  build: buildLoss,
});

/** torchtune's CEWithChunkedOutputLoss: the output projection and loss in chunks of tokens. */
export const chunkedCrossEntropyComponent = registerComponent<CrossEntropyLoss>({
  name: "torchtune.modules.loss.CEWithChunkedOutputLoss",
  aliases: ["torchtune.loss.CEWithChunkedOutputLoss", "CEWithChunkedOutputLoss"],
  kind: "loss",
  doc: "cross-entropy, mean over labels that are not ignore_index (fused with the output layer)",
  params: CHUNKED_LOSS_PARAMS,
  build: buildLoss,
});

/**
 * torchtune's LinearCrossEntropyLoss: the output projection and the cross-entropy in
 * `num_output_chunks` chunks of tokens, so the whole logits never exist at once. That is
 * how tune's loss head always runs (the model's logits buffer holds one chunk of rows), so
 * it is the same loss as CEWithChunkedOutputLoss, with torchtune's default of 8 chunks.
 */
export const linearCrossEntropyComponent = registerComponent<CrossEntropyLoss>({
  name: "torchtune.modules.loss.LinearCrossEntropyLoss",
  aliases: ["torchtune.loss.LinearCrossEntropyLoss", "LinearCrossEntropyLoss"],
  kind: "loss",
  doc: "cross-entropy fused with the output projection, computed in chunks of tokens",
  params: CHUNKED_LOSS_PARAMS,
  build: buildLoss,
});

/** torchtune's knowledge-distillation loss: the options the recipe needs. */
export interface KdLoss {
  kind: "forward_kl";
  ignoreIndex: number;
}

function buildKdLoss(args: Record<string, unknown>): KdLoss {
  return { kind: "forward_kl", ignoreIndex: args.ignore_index as number };
}

/** torchtune.modules.loss.ForwardKLLoss: cross-entropy of the student against softmax(teacher). */
export const forwardKlComponent = registerComponent<KdLoss>({
  name: "torchtune.modules.loss.ForwardKLLoss",
  aliases: ["torchtune.loss.ForwardKLLoss", "ForwardKLLoss"],
  kind: "kd_loss",
  doc:
    "-sum_v softmax(teacher)_v log softmax(student)_v, mean over labels that are not ignore_index",
  params: {
    ignore_index: { type: "int", default: -100, doc: "label value that is not counted" },
  },
  build: buildKdLoss,
});

/** torchtune.modules.loss.ForwardKLWithChunkedOutputLoss (same numbers; fused, no chunks). */
export const chunkedForwardKlComponent = registerComponent<KdLoss>({
  name: "torchtune.modules.loss.ForwardKLWithChunkedOutputLoss",
  aliases: ["torchtune.loss.ForwardKLWithChunkedOutputLoss", "ForwardKLWithChunkedOutputLoss"],
  kind: "kd_loss",
  doc: "ForwardKLLoss computed with the output layer (the fused op needs no chunks)",
  params: {
    num_output_chunks: {
      type: "int",
      default: 8,
      doc: "accepted for torchtune configs; ignored: distillation holds the teacher's whole " +
        "logits per micro-batch, so the fused op runs unchunked (the same numbers)",
    },
    ignore_index: { type: "int", default: -100, doc: "label value that is not counted" },
  },
  build: buildKdLoss,
});
