/**
 * Token embedding on the CUDA backend (kernels/elementwise.cu: embedding_fwd, embedding_bwd
 * with its rows grouped by token for a deterministic sum). CPU twin: embeddingForward and
 * embeddingBackward of src/backend/cpu/layers.ts.
 */

import { TuneError } from "../../errors.ts";
import type { DeviceBuffer } from "../ops.ts";
import { cudaBuf, dtCode } from "./buffer.ts";
import { need } from "./checks.ts";
import type { CudaContext } from "./context.ts";
import { THREADS } from "./kernels.ts";
import { upload } from "./memory.ts";

/** Token ids must index the table: the same one-line error as the CPU backend. */
function checkTokens(tok: Int32Array, V: number): void {
  for (let i = 0; i < tok.length; i++) {
    if (tok[i] < 0 || tok[i] >= V) {
      throw new TuneError(
        `token id ${tok[i]} at position ${i} is outside the vocabulary 0..${V - 1}; ` +
          `check that the tokenizer matches the model`,
      );
    }
  }
}

export function embeddingForward(
  ctx: CudaContext,
  out: DeviceBuffer,
  tokens: DeviceBuffer,
  table: DeviceBuffer,
  N: number,
  C: number,
  hostTokens?: Int32Array,
): void {
  const o = cudaBuf(out, "embedding out"), t = cudaBuf(tokens, "embedding tokens");
  const tb = cudaBuf(table, "embedding table");
  need(o, N * C, "embedding out"); // (N, C)
  need(t, N, "embedding tokens"); // (N)
  if (t.dtype !== "i32") throw new Error("embedding tokens: expected an i32 buffer");
  const V = Math.floor(tb.length / C); // table (V, C)
  checkTokens(ctx.idsOnHost(t, N, "embeddingForward token check", hostTokens), V);
  ctx.kernels.run1d("embedding_fwd", N * C, [
    o.ptr,
    dtCode(o.dtype),
    t.ptr,
    tb.ptr,
    dtCode(tb.dtype),
    N,
    C,
    V,
  ]);
}

export function embeddingBackward(
  ctx: CudaContext,
  dtable: DeviceBuffer,
  dout: DeviceBuffer,
  tokens: DeviceBuffer,
  N: number,
  C: number,
  hostTokens?: Int32Array,
): void {
  const dt = cudaBuf(dtable, "embedding dtable"), dy = cudaBuf(dout, "embedding dout");
  const t = cudaBuf(tokens, "embedding tokens");
  need(dy, N * C, "embedding dout"); // (N, C)
  need(t, N, "embedding tokens"); // (N)
  if (t.dtype !== "i32") throw new Error("embedding tokens: expected an i32 buffer");
  const V = Math.floor(dt.length / C); // dtable (V, C)
  if (N === 0 || C === 0) return;
  // Group the rows by token on the host (a small download) so the kernel can add each
  // token's rows in a fixed order: deterministic, and out-of-range ids are reported.
  const tok = ctx.idsOnHost(t, N, "embeddingBackward row order", hostTokens);
  checkTokens(tok, V);
  const order = Array.from({ length: N }, (_, i) => i);
  order.sort((a, b) => tok[a] - tok[b] || a - b);
  const uniq: number[] = [], starts: number[] = [];
  for (let j = 0; j < N; j++) {
    if (j === 0 || tok[order[j]] !== tok[order[j - 1]]) {
      uniq.push(tok[order[j]]);
      starts.push(j);
    }
  }
  starts.push(N);
  const U = uniq.length;
  const meta = new Int32Array(2 * U + 1 + N); // [uniq(U), starts(U + 1), rows(N)]
  meta.set(uniq, 0);
  meta.set(starts, U);
  meta.set(order, 2 * U + 1);
  const m = ctx.scratch(meta.length, "i32");
  upload(ctx, m, meta);
  ctx.kernels.run("embedding_bwd", [U, Math.ceil(C / THREADS), 1], THREADS, 0, [
    dt.ptr,
    dtCode(dt.dtype),
    dy.ptr,
    dtCode(dy.dtype),
    m.ptr,
    U,
    C,
  ]);
  ctx.dropScratch(m);
}
