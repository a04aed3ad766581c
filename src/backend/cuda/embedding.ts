/**
 * Token embedding on the CUDA backend (kernels/elementwise.cu: embedding_fwd, embedding_bwd
 * with its rows grouped by token for a deterministic sum). CPU twin: embeddingForward and
 * embeddingBackward of src/backend/cpu/layers.ts.
 */

import { TuneError } from "../../errors.ts";
import type { DeviceBuffer, OpArgs } from "../ops.ts";
import { cudaBuf, type CudaBuffer, ptrDt } from "./buffer.ts";
import { operand } from "./checks.ts";
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

export function embeddingForward(ctx: CudaContext, ...a: OpArgs<"embeddingForward">): void {
  const [out, tokens, table, N, C, hostTokens] = a;
  const tb = cudaBuf(table, "embedding table");
  const o = operand(out, N * C, "embedding out"); // (N, C)
  const { t, V } = tokenIds(ctx, tokens, tb, N, C, "embeddingForward token check", hostTokens);
  ctx.kernels.run1d("embedding_fwd", N * C, [...ptrDt(o), t.ptr, ...ptrDt(tb), N, C, V]);
}

export function embeddingBackward(ctx: CudaContext, ...a: OpArgs<"embeddingBackward">): void {
  const [dtable, dout, tokens, N, C, hostTokens] = a;
  const dt = cudaBuf(dtable, "embedding dtable");
  const dy = operand(dout, N * C, "embedding dout"); // (N, C)
  if (N === 0 || C === 0) return;
  // Group the rows by token on the host (a small download) so the kernel can add each
  // token's rows in a fixed order: deterministic, and out-of-range ids are reported.
  const { tok } = tokenIds(ctx, tokens, dt, N, C, "embeddingBackward row order", hostTokens);
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
  const args = [...ptrDt(dt, dy), m.ptr, U, C];
  ctx.kernels.run("embedding_bwd", [U, Math.ceil(C / THREADS), 1], THREADS, 0, args);
  ctx.dropScratch(m);
}

/**
 * The i32 token ids (N), checked against the vocabulary V of `table` (V, C) with the CPU
 * backend's one-line error; read on the host (`hostTokens`, or a download labelled `label`).
 */
function tokenIds(
  ctx: CudaContext,
  tokens: DeviceBuffer,
  table: CudaBuffer,
  N: number,
  C: number,
  label: string,
  hostTokens?: Int32Array,
) {
  const t = operand(tokens, N, "embedding tokens"); // (N)
  if (t.dtype !== "i32") throw new Error("embedding tokens: expected an i32 buffer");
  const V = Math.floor(table.length / C);
  const tok = ctx.idsOnHost(t, N, label, hostTokens);
  checkTokens(tok, V);
  return { t, tok, V };
}
