/** Learning-rate schedules (torchtune's get_cosine_schedule_with_warmup). */

/** Cosine decay after a linear warmup, as a multiplier of the base learning rate. */
export interface CosineWithWarmup {
  numWarmupSteps: number;
  /** Number of cosine cycles (0.5: decay from 1 to 0 once). */
  numCycles: number;
}

/**
 * torchtune's lr_lambda: step / warmup during warmup, then
 * max(0, 0.5 * (1 + cos(pi * cycles * 2 * progress))), progress over the remaining steps.
 * `step` is the 0-based optimizer step.
 */
export function cosineMultiplier(
  s: CosineWithWarmup,
  step: number,
  numTrainingSteps: number,
): number {
  if (step < s.numWarmupSteps) return step / Math.max(1, s.numWarmupSteps);
  const progress = (step - s.numWarmupSteps) / Math.max(1, numTrainingSteps - s.numWarmupSteps);
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * s.numCycles * 2 * progress)));
}

/** A scheduler bound to a base lr and total step count: `lrAt(step)` for 0-based steps. */
export class LrScheduler {
  constructor(
    readonly schedule: CosineWithWarmup,
    readonly baseLr: number,
    readonly numTrainingSteps: number,
  ) {}

  /** Learning rate of 0-based optimizer step `step`. */
  lrAt(step: number): number {
    return this.baseLr * cosineMultiplier(this.schedule, step, this.numTrainingSteps);
  }
}
