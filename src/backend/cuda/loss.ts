/**
 * Losses on the CUDA backend: cross-entropy with its fused gradient (kernels/layers.cu:
 * cross_entropy) and the distillation cross-entropy against a teacher's softmax
 * (kernels/distill.cu). CPU twin: crossEntropy and distillCrossEntropy of
 * src/backend/cpu/layers.ts.
 */

import { TuneError } from "../../errors.ts";
import type { DeviceBuffer } from "../ops.ts";
import { cudaBuf, dtCode } from "./buffer.ts";
import { need } from "./checks.ts";
import type { CudaContext } from "./context.ts";

/** Threads per block of cross_entropy (one block per row of logits). */
const CE_THREADS = 512;

export function crossEntropy(
  ctx: CudaContext,
  losses: DeviceBuffer,
  dlogits: DeviceBuffer | null,
  logits: DeviceBuffer,
  targets: DeviceBuffer,
  N: number,
  V: number,
  gradScale: number,
  hostTargets?: Int32Array,
): void {
  const { ls, lg, t, dptr, ddt } = ceOperands(
    ctx,
    "crossEntropy",
    losses,
    dlogits,
    logits,
    targets,
    N,
    V,
    hostTargets,
  );
  if (N === 0) return;
  ctx.kernels.run("cross_entropy", N, CE_THREADS, 0, [
    ls.ptr,
    dtCode(ls.dtype),
    dptr,
    ddt,
    lg.ptr,
    dtCode(lg.dtype),
    t.ptr,
    N,
    V,
    gradScale,
  ]);
}

export function distillCrossEntropy(
  ctx: CudaContext,
  losses: DeviceBuffer,
  kdLosses: DeviceBuffer,
  dlogits: DeviceBuffer | null,
  logits: DeviceBuffer,
  teacherLogits: DeviceBuffer,
  targets: DeviceBuffer,
  N: number,
  V: number,
  kdRatio: number,
  gradScale: number,
  hostTargets?: Int32Array,
): void {
  const { ls, lg, t, dptr, ddt } = ceOperands(
    ctx,
    "distillCrossEntropy",
    losses,
    dlogits,
    logits,
    targets,
    N,
    V,
    hostTargets,
  );
  const kd = cudaBuf(kdLosses, "distillCrossEntropy kdLosses");
  const te = cudaBuf(teacherLogits, "distillCrossEntropy teacherLogits");
  need(kd, N, "distillCrossEntropy kdLosses"); // (N)
  need(te, N * V, "distillCrossEntropy teacherLogits"); // (N, V)
  if (N === 0) return;
  ctx.kernels.run("distill_cross_entropy", N, CE_THREADS, 0, [
    ls.ptr,
    dtCode(ls.dtype),
    kd.ptr,
    dtCode(kd.dtype),
    dptr,
    ddt,
    lg.ptr,
    dtCode(lg.dtype),
    te.ptr,
    dtCode(te.dtype),
    t.ptr,
    N,
    V,
    kdRatio,
    gradScale,
  ]);
}

/**
 * The operands both cross-entropy kernels share, checked: losses (N), logits (N, V), i32
 * targets (N) within the vocabulary (the CPU backend's one-line error otherwise) and the
 * optional dlogits (N, V) as a pointer and dtype code (0n, 0 when null).
 */
function ceOperands(
  ctx: CudaContext,
  op: string,
  losses: DeviceBuffer,
  dlogits: DeviceBuffer | null,
  logits: DeviceBuffer,
  targets: DeviceBuffer,
  N: number,
  V: number,
  hostTargets?: Int32Array,
) {
  const ls = cudaBuf(losses, `${op} losses`), lg = cudaBuf(logits, `${op} logits`);
  const t = cudaBuf(targets, `${op} targets`);
  need(ls, N, `${op} losses`); // (N)
  need(lg, N * V, `${op} logits`); // (N, V)
  need(t, N, `${op} targets`); // (N)
  if (t.dtype !== "i32") throw new Error(`${op} targets: expected an i32 buffer`);
  checkTargets(ctx, t, N, V, `${op} target check`, hostTargets);
  let dptr = 0n, ddt = 0;
  if (dlogits !== null) {
    const d = cudaBuf(dlogits, `${op} dlogits`);
    need(d, N * V, `${op} dlogits`); // (N, V)
    dptr = d.ptr;
    ddt = dtCode(d.dtype);
  }
  return { ls, lg, t, dptr, ddt };
}

/** The same one-line error as the CPU backend for a label outside the vocabulary. */
function checkTargets(
  ctx: CudaContext,
  t: ReturnType<typeof cudaBuf>,
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
