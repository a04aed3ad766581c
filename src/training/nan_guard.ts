/** Stopping a run whose loss is no longer a finite number. */
import { TuneError } from "../errors.ts";

/**
 * Throw a one-line TuneError when `loss` is NaN or infinite. Nothing is saved after such a
 * step, so the last checkpoint on disk (named by `lastCheckpoint`) is the last good one.
 */
export function checkFiniteLoss(
  loss: number,
  step: number,
  lastCheckpoint: string | null,
  what = "loss",
): void {
  if (Number.isFinite(loss)) return;
  const kept = lastCheckpoint
    ? `the last good checkpoint is ${lastCheckpoint}`
    : "no checkpoint was saved yet";
  throw new TuneError(
    `${what} is ${loss} at step ${step}: training diverged and was stopped (${kept}); ` +
      `lower optimizer.lr, set clip_grad_norm, or check the data`,
  );
}
