/**
 * The CPU backend's NF4 ops (src/backend/cpu/nf4.ts) against dense products over the
 * dequantized weight: nf4Dequantize of a row range is bitwise the host dequantization, and
 * nf4MatmulForward / nf4MatmulBackward (tiled over rows of W) match matmulForward /
 * matmulBackward on the dequantized W at fp32 forward / gradient tolerances, with and without
 * bias and accumulation, for a single-tile and a two-tile weight.
 */
import assert from "node:assert/strict";
import { assertClose } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { Nf4Store } from "../src/quant/nf4_store.ts";
import { nf4Dequantize } from "../src/quant/nf4.ts";
import { hashedTensor } from "./_quant_helpers.ts";
import { NF4_TILE } from "../src/backend/cpu/nf4.ts";

for (const [N, K, M] of [[128, 256, 5], [4096, 512, 3], [256, 64, 1]]) {
  Deno.test(`nf4MatmulForward/Backward() of a (${N}, ${K}) NF4 weight equal dense products over its dequantized values (M=${M})`, () => {
    const be = new CpuBackend();
    const store = new Nf4Store(be, [{ name: "w", shape: [N, K] }]);
    store.setTensor("w", { shape: [N, K], data: hashedTensor([N, K], 11, 0.05, true) });
    const w = store.weight("w");
    const deq = nf4Dequantize(store.getQuantized("w"));
    assert.ok(N * K <= NF4_TILE || N * K >= 2 * NF4_TILE - K, "single or multi tile");
    // nf4Dequantize op on a row range: bitwise the host dequantization
    const rows = be.alloc(7 * K);
    be.nf4Dequantize(rows, w, 3, 7);
    assert.deepEqual(be.download(rows), deq.slice(3 * K, 10 * K));

    const dense = be.alloc(N * K);
    be.upload(dense, deq);
    const x = be.alloc(M * K), bias = be.alloc(N);
    be.upload(x, hashedTensor([M, K], 12, 1));
    be.upload(bias, hashedTensor([N], 13, 0.5));
    const a = be.alloc(M * N), b = be.alloc(M * N);
    be.upload(a, hashedTensor([M, N], 14, 1));
    be.copy(b, a);
    be.nf4MatmulForward(a, x, w, bias, M, true);
    be.matmulForward(b, x, dense, bias, M, K, N, true);
    assertClose("forward (bias, accumulate)", be.download(a), be.download(b), {
      atol: 1e-5,
      rtol: 1e-4,
    });
    be.nf4MatmulForward(a, x, w, null, M);
    be.matmulForward(b, x, dense, null, M, K, N);
    assertClose("forward", be.download(a), be.download(b), { atol: 1e-5, rtol: 1e-4 });

    const dy = be.alloc(M * N), dxa = be.alloc(M * K), dxb = be.alloc(M * K);
    be.upload(dy, hashedTensor([M, N], 15, 1));
    be.upload(dxa, hashedTensor([M, K], 16, 1));
    be.copy(dxb, dxa);
    be.nf4MatmulBackward(dxa, dy, w, M);
    be.matmulBackward(dxb, null, null, dy, x, dense, M, K, N);
    assertClose("input gradient (accumulated)", be.download(dxa), be.download(dxb), {
      atol: 1e-4,
      rtol: 1e-3,
    });
    store.free();
  });
}
