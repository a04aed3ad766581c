/**
 * Gemma 2's final logit soft-cap over the op interface: logits = cap * tanh(logits / cap),
 * and its backward. Backends without the op (CUDA for now) refuse the model in one line.
 */
import type { Backend, DeviceBuffer } from "../../backend/ops.ts";
import { TuneError } from "../../errors.ts";

function refuse(): never {
  throw new TuneError(
    "this device has no logit soft-cap op (Gemma 2's final_logit_softcapping); run the model with device=cpu",
  );
}

/** x(n) = cap * tanh(x / cap) in place, over the first n elements. */
export function logitSoftcap(be: Backend, x: DeviceBuffer, n: number, cap: number): void {
  if (!be.softcap) refuse();
  be.softcap(n === x.length ? x : be.view(x, 0, n), cap);
}

/** dx(n) *= d(cap * tanh(z / cap))/dz, with y(n) the capped logits. */
export function logitSoftcapBackward(
  be: Backend,
  dx: DeviceBuffer,
  y: DeviceBuffer,
  n: number,
  cap: number,
): void {
  if (!be.softcapBackward) refuse();
  const v = (b: DeviceBuffer) => (n === b.length ? b : be.view(b, 0, n));
  be.softcapBackward(v(dx), v(y), cap);
}
