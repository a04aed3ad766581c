/**
 * The CPU backend's fused decode step (decode.ts) gives bitwise the logits of the op-by-op
 * decode (each op through the generic interface), for batch 1 and 2, GQA, both rope
 * layouts, q/k/v bias, on both matrix-product paths; and decodeStep() uses it; at batch 4 with
 * the pool's worker taking half the sequences' attention, finished sequences included.
 */
import { strictEqual as assertEquals } from "node:assert/strict";
import { loadFixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import type { CpuDecoder } from "../src/backend/cpu/decode.ts";
import { CpuPool } from "../src/backend/cpu/pool.ts";
import { kernelModule } from "../src/backend/cpu/simd.ts";
import { createLlama } from "../src/models/llama/model.ts";
import { fixtureConfig, prefixedStateDict } from "./_model_helpers.ts";

/**
 * The fixture model twice with caches for (B, T): on a backend with the fused decoder (each
 * decoder it makes is recorded) and on one without (the op-by-op decode).
 */
function fusedAndPlain(name: string, matmul: "blas" | "ts", B: number, T: number) {
  const fx = loadFixture(name);
  const cfg = fixtureConfig(fx);
  const fused = new CpuBackend({ matmul }), plain = new CpuBackend({ matmul });
  const decoders: CpuDecoder[] = [];
  const make = fused.createDecoder.bind(fused);
  fused.createDecoder = (s) => {
    const d = make(s) as CpuDecoder;
    decoders.push(d);
    return d;
  };
  (plain as { createDecoder?: unknown }).createDecoder = undefined;
  const sd = prefixedStateDict(fx, "w.");
  const models = [fused, plain].map((be) => {
    const m = createLlama(be, { name, config: cfg, lora: null }, {
      batch: 1,
      seqLen: 1,
      training: false,
    });
    m.loadStateDict(sd);
    m.setupCaches(B, T);
    return m;
  });
  return { fused, plain, models, decoders, V: cfg.vocabSize };
}

for (const matmul of ["blas", "ts"] as const) {
  for (const name of ["model_tiny_a", "model_tiny_b"]) {
    for (const [B, P] of [[1, 3], [2, 3], [1, 1], [2, 1]]) {
      Deno.test(`fused decodeStep() equals the op-by-op decode bitwise (${name}, B=${B}, prompt ${P}, ${matmul})`, () => {
        const T = 12;
        const { fused, plain, models, decoders, V } = fusedAndPlain(name, matmul, B, T);
        assertEquals(decoders.length, 1);
        const seqs = Int32Array.from({ length: B * T }, (_, i) => (i * 13 + 5) % V);
        const prompt = new Int32Array(B * P);
        for (let b = 0; b < B; b++) prompt.set(seqs.subarray(b * T, b * T + P), b * P);
        const outs = models.map((m, i) => [i === 0 ? fused : plain, m] as const);
        const first = outs.map(([be, m]) => be.download(m.prefill(prompt)) as Float32Array);
        assertEquals(first[0].every((x, i) => x === first[1][i]), true, "prefill logits differ");
        for (let t = P; t < T; t++) {
          const step = Int32Array.from({ length: B }, (_, b) => seqs[b * T + t]);
          const [a, b] = outs.map(([be, m]) => be.download(m.decodeStep(step)) as Float32Array);
          let worst = 0;
          for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
          assertEquals(worst, 0, `position ${t}: fused logits differ by up to ${worst}`);
        }
        for (const m of models) m.free();
      });
    }
  }
}

Deno.test("at batch 4 the pool's worker runs half the sequences' attention in the shared arena, bitwise the op-by-op decode, also with finished sequences", () => {
  const B = 4, T = 12;
  const { fused, plain, models: [mf, mp], decoders, V } = fusedAndPlain(
    "model_tiny_b",
    "blas",
    B,
    T,
  );
  // the worker's share: with the pool and the wasm kernels (TUNE_CPU_SIMD=0 turns those off)
  const split = CpuPool.get() !== null && kernelModule() !== null;
  assertEquals(decoders[0].splitsAttention, split, "the worker's share");
  const live = Uint8Array.of(1, 1, 1, 1);
  let tok = Int32Array.from({ length: B }, (_, b) => (b * 7 + 3) % V);
  mf.prefill(tok);
  mp.prefill(tok);
  for (let t = 1; t < T; t++) {
    if (t === 5) live[1] = 0; // sequence 1 finishes; from t = 8 only sequences 0 and 2 run
    if (t === 8) live[3] = 0;
    tok = Int32Array.from({ length: B }, (_, b) => (b * 5 + t * 11) % V);
    const a = fused.download(mf.decodeStep(tok, live)) as Float32Array;
    const b = plain.download(mp.decodeStep(tok, live)) as Float32Array;
    for (let s = 0; s < B; s++) {
      if (live[s] === 0) continue; // a finished sequence's logits are unspecified
      for (let i = s * V; i < (s + 1) * V; i++) {
        assertEquals(a[i], b[i], `position ${t}, sequence ${s}: fused logits differ`);
      }
    }
  }
  mf.free();
  mp.free();
});
