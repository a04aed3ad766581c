/**
 * One training run on 1..N processes: what differs between one process and a sharded job,
 * behind one small interface, so a recipe has one loop for both.
 *
 * - `joinRun(device)`: this process's backend and place in the job (RANK, WORLD_SIZE, ...
 *   from the launcher; a job of one without them).
 * - `shardedModelOptions` / `beginLoading`: on N > 1 processes the model keeps its weights
 *   as group-sized windows (FSDP/ZeRO-3, src/training/sharded.ts), loaded through
 *   temporary full buffers.
 * - `setupTrainable`: the trainable state (gradients, clipping, the AdamW step, saving),
 *   local on one process, each rank's slices on N.
 * - `modelCalls`: the model's training entries, the windowed ones on N processes.
 * On one process nothing is sharded and no collective runs: the numbers are those of the
 * plain model, bit for bit.
 */
import type { Backend } from "../backend/ops.ts";
import { createBackend } from "../backend/select.ts";
import type { RecipeState } from "../checkpoint/recipe_state.ts";
import { discoverRank } from "../distributed/env.ts";
import { initProcessGroup, type ProcessGroup } from "../distributed/process_group.ts";
import type { TokenizedDataset } from "../data/mod.ts";
import type {
  BatchOptions,
  DistillLossResult,
  DistillTargets,
  LlamaModel,
  LlamaOptions,
  LossResult,
  SequenceWeigher,
  WeightedLossResult,
} from "../models/llama/model.ts";
import { crossEntropyHead, distillHead, preferenceHead } from "../models/llama/model.ts";
import { AdamW } from "../optim/adamw.ts";
import type { TrainingOptimizer } from "../optim/create.ts";
import { clipGradNorm } from "../optim/clip.ts";
import {
  type HostMoments,
  recipeStateMoments,
  restoreTrainingState,
  type TrainingProgress,
} from "./checkpointing.ts";
import { allSumF64, chainHooks, ShardedFrozen, ShardedOptimizer } from "./sharded.ts";
import { barrierAfterSave, broadcastInt, setupDistributed } from "./sharded_setup.ts";
import { scoreLoss, scoreLossSharded } from "./validation.ts";
import { OptimizerInBackward } from "./optimizer_in_bwd.ts";

/** This process's backend and place in the run. */
export interface Runtime {
  backend: Backend;
  group: ProcessGroup;
  rank: number;
  worldSize: number;
  /** Rank 0: logs, prints and writes checkpoints. */
  isMain: boolean;
  /** More than one process: weights, gradients and optimizer state are sharded. */
  sharded: boolean;
}

/**
 * Join the run the environment describes: one process (no launcher variables, or a world
 * of one) gets the plain backend; a rank of N gets the job's collectives (TCP on the CPU,
 * NCCL on GPUs). A missing peer or GPU fails here, before any slow load. With `shardAlone`
 * (fsdp_cpu_offload) one process runs sharded too, as FSDP does on one GPU: a world of one
 * whose slices are the whole layout, so its state can live in host memory.
 */
export async function joinRun(
  device: "cpu" | "cuda",
  o: { shardAlone?: boolean } = {},
): Promise<Runtime> {
  if (discoverRank().worldSize === 1) {
    const backend = await createBackend(device); // its collectives: a world of one
    const group = await initProcessGroup(); // a job of one: no sockets
    const sharded = o.shardAlone ?? false;
    return { backend, group, rank: 0, worldSize: 1, isMain: true, sharded };
  }
  const { group, backend } = await setupDistributed(device);
  const { rank, worldSize, isMain } = group;
  return { backend, group, rank, worldSize, isMain, sharded: true };
}

/** A seed every rank agrees on: a resumed run's own, else rank 0's. */
export async function agreeSeed(rt: Runtime, seed: number): Promise<number> {
  return rt.sharded ? await broadcastInt(rt.backend, seed) : seed;
}

/** Sums of host numbers over all ranks (the numbers themselves on one process). */
export async function allSum(rt: Runtime, values: number[]): Promise<number[]> {
  return rt.sharded ? await allSumF64(rt.backend, values) : values;
}

/** Whether any rank raised `flag` (every rank gets the same answer, so all stop at the same step). */
export async function anyRank(rt: Runtime, flag: () => boolean): Promise<boolean> {
  if (!rt.sharded) return flag();
  const [n] = await allSumF64(rt.backend, [flag() ? 1 : 0]);
  return n > 0;
}

/** The model options of a sharded run (none on one process). */
export function shardedModelOptions(rt: Runtime, lora: boolean): Partial<LlamaOptions> {
  if (!rt.sharded) return {};
  return {
    optimizerMoments: false, // the moments live in each rank's slices
    groupWindows: rt.worldSize, // group buffers padded for in-place collectives
    shardFrozenBase: lora,
  };
}

/** Before loading weights into a sharded model: temporary full buffers to load into. */
export function beginLoading(rt: Runtime, model: LlamaModel): void {
  if (!rt.sharded) return;
  if (model.spec.lora) model.base.materialize();
  model.trainable.materialize();
}

/** The trainable state of a run: gradients, clipping, the optimizer step and saving. */
export interface Trainable {
  /** Zero the gradients (start of an optimizer step). */
  zeroGrads(): void;
  /**
   * Before the step's backward, with the step's learning rate: under optimizer_in_bwd the
   * backward itself then steps each group (and `clip`/`step` only report and check).
   */
  beginStep(lr: number): void;
  /** Clip to `maxNorm` (Infinity: no clipping); returns the global norm before clipping. */
  clip(maxNorm: number): Promise<number>;
  /** One optimizer update with learning rate `lr` (sharded 8-bit AdamW talks to the other ranks). */
  step(lr: number): Promise<void>;
  /**
   * Write a checkpoint: every rank calls it; the full values are in the model while
   * `write` runs on rank 0 (with the gathered moments when sharded); all ranks wait for it.
   */
  save(write: (moments: HostMoments | undefined) => string): Promise<string | null>;
  /**
   * Run `fn` while the model holds its full weights (sharded: gathered on every rank for the
   * call; GRPO copies them into its sampling model).
   */
  withFullWeights<R>(fn: () => R | Promise<R>): Promise<R>;
  free(): void;
}

/**
 * The model's memory, with PagedAdamW's moments: `optimizer` counts the device staging it
 * pages them through, `optimizerHost` the host memory they live in.
 */
function memoryReport(model: LlamaModel, optimizer: TrainingOptimizer) {
  const mem = model.memory();
  if (!(optimizer instanceof AdamW && optimizer.paged)) return mem;
  return {
    ...mem,
    optimizer: optimizer.paged.deviceBytes,
    optimizerHost: optimizer.paged.hostBytes,
  };
}

/**
 * The trainable state after the weights are loaded, and where the run stands (restored from
 * `state` when resuming). Prints each rank's share of a sharded run unless `quiet`; with
 * `memoryStats` rank 0 prints the model's memory.
 */
export function setupTrainable(
  rt: Runtime,
  model: LlamaModel,
  optimizer: TrainingOptimizer,
  state: RecipeState | null,
  o: {
    seed: number;
    quiet: boolean;
    memoryStats: boolean;
    optimizerInBwd?: boolean;
    /** fsdp_cpu_offload: the slices and the optimizer step in host memory (sharded runs). */
    hostState?: boolean;
  },
): { trainable: Trainable; progress: TrainingProgress } {
  const fresh = { step: 0, epoch: 0, dataPosition: 0, seed: o.seed };
  const say = (s: string) => rt.isMain && !o.quiet && console.error(s);
  if (!rt.sharded) {
    if (o.hostState) throw new Error("host state needs a sharded runtime (joinRun shardAlone)");
    if (o.memoryStats) say(`memory (bytes): ${JSON.stringify(memoryReport(model, optimizer))}`);
    const be = rt.backend;
    const progress = state ? restoreTrainingState(state, model, optimizer) : fresh;
    if (o.optimizerInBwd) return { trainable: inBackward(rt, model, optimizer, o), progress };
    const trainable: Trainable = {
      zeroGrads: () => model.zeroGrad(),
      beginStep: () => {},
      clip: (maxNorm) => Promise.resolve(clipGradNorm(be, model.trainable, maxNorm)),
      step: (lr) => Promise.resolve(optimizer.step(lr)),
      save: (write) => Promise.resolve(write(undefined)),
      withFullWeights: async (fn) => await fn(),
      free: () => {},
    };
    return { trainable, progress };
  }
  const sharded = new ShardedOptimizer(rt.backend, model.trainable, optimizer, {
    hostState: o.hostState,
  });
  const nf4 = model.nf4?.sharded ? model.nf4 : null; // QLoRA: the NF4 base, sharded too
  const frozen = model.spec.lora
    ? new ShardedFrozen(rt.backend, model.base, nf4, { hostState: o.hostState })
    : null;
  if (frozen) {
    frozen.takeParams();
    model.base.release();
  }
  // before each group runs: its trainable weights, then its frozen ones, gathered
  model.groupHooks = frozen ? chainHooks(sharded, frozen) : sharded;
  let progress: TrainingProgress = fresh;
  if (state) {
    progress = restoreTrainingState(state, model, optimizer); // 8-bit AdamW: its slices
    if (optimizer instanceof AdamW) sharded.loadMoments(recipeStateMoments(state));
  }
  sharded.takeParams();
  model.trainable.release();
  reportShares(sharded, frozen, o.quiet);
  if (o.memoryStats) {
    // the model reports its group buffers; the slices are the sharded holders'
    const own = model.memory();
    const rep = sharded.report();
    const slice = rep.shardElements * 4;
    const fr = frozen?.report();
    const frozenSlices = fr?.shardBytes ?? 0;
    // host state (fsdp_cpu_offload): the slices (a LoRA base's too) and the moments are host
    // memory; the device keeps the group buffers and the staging the slices pass through
    const mem = rep.hostState
      ? {
        ...own,
        parameters: own.parameters,
        gradients: own.gradients,
        optimizer: 0,
        staging: rep.stagingBytes + (fr?.stagingBytes ?? 0),
        parametersHost: slice + frozenSlices,
        gradientsHost: slice,
        optimizerHost: rep.optimizerBytes,
      }
      : {
        ...own,
        parameters: own.parameters + slice + frozenSlices,
        gradients: own.gradients + slice,
        optimizer: rep.optimizerBytes,
      };
    say(`memory (bytes, rank 0): ${JSON.stringify(mem)}`);
  }
  // optimizer_in_bwd: each group's slice steps once its gradients are reduce-scattered;
  // `clip` reports the step's norm from the reduced slices (clipping is refused)
  const inBwd = o.optimizerInBwd ?? false;
  const steps: Pick<Trainable, "clip" | "step"> = inBwd
    ? inBackwardSteps(async () => {
      sharded.finishInBackward();
      return await sharded.gradNorm();
    })
    : { clip: (maxNorm) => sharded.clip(maxNorm), step: (lr) => sharded.step(lr) };
  const trainable: Trainable = {
    zeroGrads: () => sharded.zeroGrads(),
    beginStep: (lr) => inBwd && sharded.beginInBackward(lr),
    ...steps, // the optimizer on this rank's slices
    async save(write) {
      const moments = await sharded.gatherMoments();
      const run = () => rt.isMain ? write(moments) : null;
      // the full weights exist on every rank only while the checkpoint is written
      const dir = await sharded.withFullParams(() => frozen ? frozen.withFullParams(run) : run());
      await barrierAfterSave(rt.group);
      return dir;
    },
    withFullWeights: (fn) =>
      sharded.withFullParams(() => frozen ? frozen.withFullParams(fn) : fn()),
    free() {
      sharded.free();
      frozen?.free();
    },
  };
  return { trainable, progress };
}

/**
 * The trainable state of optimizer_in_bwd on one process: the model's group hooks step each
 * group inside its backward; `clip` returns the step's gradient norm (clipping is refused),
 * `step` checks that every group stepped.
 */
function inBackward(
  rt: Runtime,
  model: LlamaModel,
  optimizer: TrainingOptimizer,
  o: { quiet: boolean; memoryStats: boolean },
): Trainable {
  const hooks = new OptimizerInBackward(rt.backend, optimizer);
  model.groupHooks = hooks;
  if (o.memoryStats && !o.quiet) {
    const g = hooks.gradientBytes();
    console.error(
      `optimizer_in_bwd: gradient bytes held ${g.held} (tune's flat buffer); ` +
        `a per-group free would hold at most ${g.largestGroup}`,
    );
  }
  return {
    zeroGrads: () => model.zeroGrad(),
    beginStep: (lr) => hooks.begin(lr),
    ...inBackwardSteps(() => Promise.resolve(hooks.finish())),
    save: (write) => Promise.resolve(write(undefined)),
    withFullWeights: async (fn) => await fn(),
    free: () => {
      model.groupHooks = null;
    },
  };
}

/**
 * optimizer_in_bwd's `clip` and `step`: the backward already stepped every group; `clip`
 * ends the step with `finish` and returns its gradient norm (clipping is refused), `step`
 * checks that `clip` ran.
 */
function inBackwardSteps(finish: () => Promise<number>): Pick<Trainable, "clip" | "step"> {
  let norm = NaN;
  return {
    clip: async () => (norm = await finish()),
    step: () => {
      if (Number.isNaN(norm)) {
        throw new Error("optimizer_in_bwd: clip() reports the step's norm before step()");
      }
      norm = NaN;
      return Promise.resolve();
    },
  };
}

/** Each rank's line about its share of the optimizer state, trainable and frozen weights. */
function reportShares(sharded: ShardedOptimizer, frozen: ShardedFrozen | null, quiet: boolean) {
  if (quiet) return;
  const rep = sharded.report();
  const who = `rank ${rep.rank}/${rep.worldSize}`;
  const where = rep.hostState ? " in host memory" : "";
  console.error(
    `${who} (pid ${Deno.pid}): optimizer state ${rep.optimizerBytes} bytes${where} ` +
      `(m, v of ${rep.shardElements} of ${rep.fullElements} trainable elements; ` +
      `one process: ${rep.fullOptimizerBytes} bytes)`,
  );
  if (rep.hostState) {
    // fsdp_cpu_offload: the device holds the group buffers and the slices' staging only
    console.error(
      `${who}: trainable params+grads resident on the device ${rep.residentParamGradBytes} ` +
        `bytes (group buffers and staging; slices ${rep.shardParamGradBytes} in host memory; ` +
        `largest group ${rep.largestGroupBytes}; one process: ${rep.fullParamGradBytes} bytes)`,
    );
  } else {
    console.error(
      `${who}: trainable params+grads resident ${rep.residentParamGradBytes} bytes ` +
        `(slices ${rep.shardParamGradBytes} + group buffers ${rep.computeParamGradBytes}; ` +
        `largest group ${rep.largestGroupBytes}; one process: ${rep.fullParamGradBytes} bytes)`,
    );
  }
  if (!frozen) return;
  const fr = frozen.report();
  console.error(
    fr.hostState
      ? `${who}: frozen base resident on the device ${fr.computeBytes} bytes (group buffers ` +
        `and staging; slices ${fr.shardBytes} in host memory; largest group ` +
        `${fr.largestGroupBytes}; one process: ${fr.fullBytes} bytes)`
      : `${who}: frozen base resident ${fr.shardBytes + fr.computeBytes} bytes ` +
        `(slices ${fr.shardBytes} + group buffers ${fr.computeBytes}; largest group ` +
        `${fr.largestGroupBytes}; one process: ${fr.fullBytes} bytes)`,
  );
  const q = frozen.nf4?.shardBytes();
  if (!q) return;
  console.error(
    `${who}: NF4 base codes+scalers resident ${q.slices + q.slot} bytes ` +
      `(slices ${q.slices} + group buffer ${q.slot}; one process: ${q.whole} bytes)`,
  );
}

/** The model's training entries for this run (the windowed ones on N processes). */
export interface ModelCalls {
  /** Forward and backward of a micro-batch; gradients of the summed loss * scale accumulate. */
  lossAndBackward(
    tokens: Int32Array,
    labels: Int32Array,
    scale: number,
    batch: BatchOptions,
  ): Promise<LossResult>;
  /** The same with the distillation loss against the teacher's logits. */
  distillLossAndBackward(
    tokens: Int32Array,
    labels: Int32Array,
    scale: number,
    distill: DistillTargets,
    batch: BatchOptions,
  ): Promise<DistillLossResult>;
  /** Forward and backward with per-sequence loss weights (preference losses). */
  weightedLossAndBackward(
    tokens: Int32Array,
    labels: Int32Array,
    weigh: SequenceWeigher,
  ): Promise<WeightedLossResult>;
  /** (B) summed token losses per sequence, no gradients. */
  sequenceLosses(tokens: Int32Array, labels: Int32Array): Promise<Float64Array>;
  /** Mean token loss of a whole dataset (validation), over all ranks. */
  score(ds: TokenizedDataset): Promise<number>;
}

/** `ModelCalls` of `model` in this run. */
export function modelCalls(rt: Runtime, model: LlamaModel): ModelCalls {
  // through the group hooks: a sharded model's, or optimizer_in_bwd's on one process
  const hooked = {
    lossAndBackward: (t: Int32Array, l: Int32Array, s: number, b: BatchOptions) =>
      model.trainStep({ ...b, tokens: t, targets: l }, crossEntropyHead(s)),
    distillLossAndBackward: (
      t: Int32Array,
      l: Int32Array,
      s: number,
      d: DistillTargets,
      b: BatchOptions,
    ) => model.trainStep({ ...b, tokens: t, targets: l }, distillHead(s, d)),
    weightedLossAndBackward: (t: Int32Array, l: Int32Array, w: SequenceWeigher) =>
      model.trainStep({ tokens: t, targets: l }, preferenceHead(w)),
  };
  if (rt.sharded) {
    return {
      ...hooked,
      sequenceLosses: async (t, l) => (await model.evalLosses({ tokens: t, targets: l })).seqLoss,
      score: (ds) => scoreLossSharded(model, ds, rt.backend, rt.rank, rt.worldSize),
    };
  }
  if (model.groupHooks) {
    return {
      ...hooked,
      sequenceLosses: (t, l) => Promise.resolve(model.sequenceLosses(t, l)),
      score: (ds) => Promise.resolve(scoreLoss(model, ds)),
    };
  }
  return {
    lossAndBackward: (t, l, s, b) => Promise.resolve(model.lossAndBackward(t, l, s, b)),
    distillLossAndBackward: (t, l, s, d, b) =>
      Promise.resolve(model.distillLossAndBackward(t, l, s, d, b)),
    weightedLossAndBackward: (t, l, w) => Promise.resolve(model.weightedLossAndBackward(t, l, w)),
    sequenceLosses: (t, l) => Promise.resolve(model.sequenceLosses(t, l)),
    score: (ds) => Promise.resolve(scoreLoss(model, ds)),
  };
}
