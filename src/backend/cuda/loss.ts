/**
 * Losses on the CUDA backend: cross-entropy with its fused gradient (kernels/layers.cu:
 * cross_entropy) and the distillation cross-entropy against a teacher's softmax
 * (kernels/distill.cu). CPU twin: crossEntropy and distillCrossEntropy of
 * src/backend/cpu/layers.ts.
 */

import { TuneError } from "../../errors.ts";
import type { DeviceBuffer, OpArgs } from "../ops.ts";
import { type CudaBuffer, ptrDt } from "./buffer.ts";
import { operand } from "./checks.ts";
import type { CudaContext } from "./context.ts";

/** Threads per block of cross_entropy (one block per row of logits). */
const CE_THREADS = 512;

export function crossEntropy(ctx: CudaContext, ...a: OpArgs<"crossEntropy">): void {
  const [losses, dlogits, logits, targets, N, V, gradScale, hostTargets] = a;
  const op = "crossEntropy";
  const ls = operand(losses, N, `${op} losses`); // (N)
  const d = ceOperands(ctx, op, dlogits, logits, targets, N, V, hostTargets);
  if (N === 0) return;
  const args = [...ptrDt(ls), ...d.dlogits, ...ptrDt(d.lg), d.t.ptr, N, V, gradScale];
  ctx.kernels.run("cross_entropy", N, CE_THREADS, 0, args);
}

export function distillCrossEntropy(
  ctx: CudaContext,
  ...a: OpArgs<"distillCrossEntropy">
): void {
  const [losses, kdLosses, dlogits, logits, teacherLogits, targets, ...rest] = a;
  const [N, V, kdRatio, gradScale, hostTargets] = rest;
  const op = "distillCrossEntropy";
  const ls = operand(losses, N, `${op} losses`); // (N)
  const d = ceOperands(ctx, op, dlogits, logits, targets, N, V, hostTargets);
  const kd = operand(kdLosses, N, `${op} kdLosses`); // (N)
  const te = operand(teacherLogits, N * V, `${op} teacherLogits`); // (N, V)
  if (N === 0) return;
  ctx.kernels.run("distill_cross_entropy", N, CE_THREADS, 0, [
    ...ptrDt(ls, kd),
    ...d.dlogits,
    ...ptrDt(d.lg, te),
    d.t.ptr,
    N,
    V,
    kdRatio,
    gradScale,
  ]);
}

/**
 * The operands both cross-entropy kernels share after the losses, checked: logits (N, V),
 * i32 targets (N) within the vocabulary (the CPU backend's one-line error otherwise) and
 * the optional dlogits (N, V) as kernel arguments, a pointer and dtype code ([0n, 0] when
 * null).
 */
function ceOperands(
  ctx: CudaContext,
  op: string,
  dlogits: DeviceBuffer | null,
  logits: DeviceBuffer,
  targets: DeviceBuffer,
  N: number,
  V: number,
  hostTargets?: Int32Array,
) {
  const lg = operand(logits, N * V, `${op} logits`); // (N, V)
  const t = operand(targets, N, `${op} targets`); // (N)
  if (t.dtype !== "i32") throw new Error(`${op} targets: expected an i32 buffer`);
  checkTargets(ctx, t, N, V, `${op} target check`, hostTargets);
  const d = dlogits === null ? [0n, 0] : ptrDt(operand(dlogits, N * V, `${op} dlogits`)); // (N, V)
  return { lg, t, dlogits: d };
}

/** The same one-line error as the CPU backend for a label outside the vocabulary. */
function checkTargets(
  ctx: CudaContext,
  t: CudaBuffer,
  N: number,
  V: number,
  label: string,
  hostTargets?: Int32Array,
): void {
  const tg = ctx.idsOnHost(t, N, label, hostTargets);
  for (let i = 0; i < N; i++) {
    if (tg[i] !== -100 && (tg[i] < 0 || tg[i] >= V)) {
      throw new TuneError(
        `target id ${tg[i]} at row ${i} is outside 0..${V - 1} (or -100 to ` +
          `ignore); check the dataset's labels against the model's vocabulary`,
      );
    }
  }
}
