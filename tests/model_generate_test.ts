/**
 * Generation with the KV cache equals the full forward: prefill then decode steps give
 * the same logits (atol 1e-5, rtol 1e-4) as the training forward at those positions, for
 * batch 2, GQA, both rope layouts, q/k/v bias, and LoRA adapters in the inference path.
 */
import { assertClose, loadFixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { createLlama } from "../src/models/llama/model.ts";
import { fixtureConfig, prefixedStateDict } from "./_model_helpers.ts";
import type { LoraConfig } from "../src/models/model_spec.ts";

const LORA: LoraConfig = {
  attnModules: ["q_proj", "k_proj", "v_proj", "output_proj"],
  applyToMlp: true,
  applyToOutput: false,
  rank: 2,
  alpha: 4,
  dropout: 0.1,
};

for (const name of ["model_tiny_a", "model_tiny_b"]) {
  for (const lora of [null, LORA]) {
    Deno.test(`prefill() and decodeStep() match forward() logits (${name}${lora ? ", LoRA" : ""})`, () => {
      const fx = loadFixture(name);
      const cfg = fixtureConfig(fx);
      const be = new CpuBackend();
      const B = 2;
      const T = 9;
      const P = 4; // prompt length
      const spec = { name, config: cfg, lora };
      const full = createLlama(be, spec, { batch: B, seqLen: T });
      const gen = createLlama(be, spec, { batch: 1, seqLen: 1 });
      const sd = prefixedStateDict(fx, "w.");
      full.loadStateDict(sd);
      if (lora) {
        // nonzero adapters so the low-rank path changes the logits
        full.initAdapters(3);
        for (const e of full.adapters!.layout.entries) {
          const data = new Float32Array(e.length).map((_, i) => Math.cos(i * 0.7) * 0.2);
          full.adapters!.setTensor(e.name, { shape: e.shape, data });
        }
        for (const [n, t] of full.adapterStateDict()) sd.set(n, t);
      }
      gen.loadStateDict(sd);
      const seqs = Int32Array.from({ length: B * T }, (_, i) => (i * 13 + 5) % cfg.vocabSize);
      const V = cfg.vocabSize;
      const ref = be.download(full.forward(seqs)) as Float32Array; // (B, T, V)
      const at = (t: number) => {
        const out = new Float32Array(B * V);
        for (let b = 0; b < B; b++) {
          out.set(ref.subarray((b * T + t) * V, (b * T + t + 1) * V), b * V);
        }
        return out;
      };
      gen.setupCaches(B, T);
      const prompt = new Int32Array(B * P);
      for (let b = 0; b < B; b++) prompt.set(seqs.subarray(b * T, b * T + P), b * P);
      const tol = { atol: 1e-5, rtol: 1e-4 };
      assertClose("prefill", be.download(gen.prefill(prompt)), at(P - 1), tol);
      for (let t = P; t < T; t++) {
        const step = Int32Array.from({ length: B }, (_, b) => seqs[b * T + t]);
        assertClose(`decode ${t}`, be.download(gen.decodeStep(step)), at(t), tol);
      }
      full.free();
      gen.free();
    });
  }
}
