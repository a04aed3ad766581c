/** Small pieces of the training loop shared by the recipes. */
import { TuneError } from "../errors.ts";

/** Optimizer steps per epoch: micro-batches / gradient_accumulation_steps, capped by max_steps_per_epoch. */
export function stepsPerEpoch(
  microBatches: number,
  gradientAccumulationSteps: number,
  maxStepsPerEpoch: number | null,
): number {
  if (!(gradientAccumulationSteps >= 1)) {
    throw new TuneError(
      `gradient_accumulation_steps must be >= 1, got ${gradientAccumulationSteps}`,
    );
  }
  let n = Math.floor(microBatches / gradientAccumulationSteps);
  if (maxStepsPerEpoch !== null) {
    if (!(maxStepsPerEpoch >= 1)) {
      throw new TuneError(`max_steps_per_epoch must be >= 1 or null, got ${maxStepsPerEpoch}`);
    }
    n = Math.min(n, maxStepsPerEpoch);
  }
  if (n === 0) {
    throw new TuneError(
      `an epoch has ${microBatches} batches, fewer than gradient_accumulation_steps=${gradientAccumulationSteps}; ` +
        `lower gradient_accumulation_steps or batch_size`,
    );
  }
  return n;
}

/** Number of labels that count in the loss (not -100). */
export function countTargets(labels: Int32Array): number {
  let n = 0;
  for (let i = 0; i < labels.length; i++) if (labels[i] !== -100) n++;
  return n;
}

/**
 * Model element types for the config's `dtype` and `device`: bf16 activations (and a bf16
 * frozen base under LoRA) on CUDA; trained weights and optimizer state stay fp32. The CPU
 * backend is the fp32 oracle, so bf16 there computes in fp32 and `note` says so.
 */
export function modelDtypes(
  dtype: string,
  device: string,
): { activationDtype: "f32" | "bf16"; frozenDtype: "f32" | "bf16"; note: string | null } {
  const bf16 = dtype === "bf16" && device === "cuda";
  return {
    activationDtype: bf16 ? "bf16" : "f32",
    frozenDtype: bf16 ? "bf16" : "f32",
    note: dtype === "bf16" && !bf16
      ? "dtype=bf16 on device=cpu: computing in fp32 (the CPU backend is the fp32 reference)"
      : null,
  };
}
