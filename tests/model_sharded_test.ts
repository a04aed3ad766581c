/**
 * The ZeRO-3 path of the model (`groupWindows` + `groupHooks` + `trainStep`)
 * driven by ShardedOptimizer on one rank (the backend's own collectives): weights exist only
 * as the rank's slices and one group-sized compute buffer, and the loss and gradients equal
 * the ordinary model's. Untied (model_tiny_a) and tied embeddings (model_tiny_b, whose
 * embedding and head need two slots), with and without activation checkpointing, full and
 * LoRA (adapters and the frozen base both windowed, as in lora_finetune_distributed). Tolerances: one micro-batch bitwise (the same op calls on the same weights); two
 * accumulated micro-batches fp32 gradients atol 1e-6 rtol 1e-5 (the sums associate
 * differently), losses bitwise.
 * The multi-rank path is tests/recipe_distributed_test.ts.
 */
import assert from "node:assert/strict";
import { assertClose, loadFixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { createLlama, crossEntropyHead } from "../src/models/llama/model.ts";
import type { LoraConfig } from "../src/models/model_spec.ts";
import { AdamW, ADAMW_DEFAULTS } from "../src/optim/adamw.ts";
import { chainHooks, ShardedFrozen, ShardedOptimizer } from "../src/training/sharded.ts";
import { fixtureConfig, prefixedStateDict } from "./_model_helpers.ts";

const LORA: LoraConfig = {
  attnModules: ["q_proj", "v_proj", "output_proj"],
  applyToMlp: true,
  applyToOutput: false,
  rank: 4,
  alpha: 8,
  dropout: 0.1,
};

for (const name of ["model_tiny_a", "model_tiny_b"]) {
  for (const ckpt of [false, true]) {
    for (const lora of [null, LORA]) {
      const label = `${name}, checkpointing ${ckpt}, ${lora ? "LoRA" : "full"}`;
      Deno.test(`trainStep() on group windows gives lossAndBackward's loss and gradients (${label})`, async () => {
        const fx = loadFixture(name);
        const cfg = fixtureConfig(fx);
        const B = fx.meta<number>("B");
        const T = fx.meta<number>("T");
        const be = new CpuBackend();
        const spec = { name, config: cfg, lora };
        const opts = { batch: B, seqLen: T, seed: 5, activationCheckpointing: ckpt };
        const ref = createLlama(be, spec, opts);
        // under LoRA the frozen base is windowed too (as in lora_finetune_distributed)
        const z = createLlama(be, spec, {
          ...opts,
          optimizerMoments: false,
          groupWindows: 1,
          shardFrozenBase: true,
        });
        ref.loadStateDict(prefixedStateDict(fx, "w."));
        const sd = ref.stateDict();
        if (lora) {
          // non-zero B so every adapter gradient is non-trivial
          for (const [n, t] of sd) {
            if (n.includes("lora_b")) t.data.forEach((_, i) => t.data[i] = Math.cos(i) * 0.05);
          }
          ref.loadStateDict(sd);
        }
        z.base.materialize();
        z.trainable.materialize();
        z.loadStateDict(sd);
        const frozen = lora ? new ShardedFrozen(be, z.base) : null;
        frozen?.takeParams();
        if (frozen) z.base.release();
        const sharded = new ShardedOptimizer(
          be,
          z.trainable,
          new AdamW(be, z.trainable, ADAMW_DEFAULTS),
        );
        sharded.takeParams();
        z.trainable.release();
        z.groupHooks = frozen ? chainHooks(sharded, frozen) : sharded;
        assert.throws(() => z.trainable.params, /materialize/);
        assert.throws(() => z.lossAndBackward(fx.i32("tokens"), fx.i32("targets"), 1), /sharded/);

        // resident trainable values + gradients: one group's compute buffers (W = 1 here)
        const largest = Math.max(...z.trainable.layout.groups.map((g) => g.length));
        const slots = cfg.tiedEmbeddings && !lora ? 2 : 1;
        const mz = z.memory();
        assert.ok(mz.gradients >= largest * 4 && mz.gradients <= slots * largest * 4);
        assert.ok(mz.gradients < ref.memory().gradients, "gradient buffer smaller than full");

        const tokens = fx.i32("tokens");
        const targets = fx.i32("targets");
        let count = 0;
        for (const t of targets) if (t !== -100) count++;
        const scale = 1 / (2 * count);
        // micro-batch 1: bitwise
        ref.zeroGrad();
        sharded.zeroGrads();
        const r1 = ref.lossAndBackward(tokens, targets, scale);
        const z1 = await z.trainStep({ tokens, targets }, crossEntropyHead(scale));
        assert.deepEqual(z1, r1, "loss of micro-batch 1");
        const refGrads = () => be.download(ref.trainable.grads!) as Float32Array;
        const zGrads = () =>
          (be.download(sharded.grads) as Float32Array).subarray(0, ref.trainable.layout.total);
        assert.deepEqual(zGrads(), refGrads(), "gradients of one micro-batch, bitwise");
        // micro-batch 2 (reversed targets): accumulated
        const t2 = targets.slice().reverse();
        const r2 = ref.lossAndBackward(tokens, t2, scale);
        const z2 = await z.trainStep({ tokens, targets: t2 }, crossEntropyHead(scale));
        assert.deepEqual(z2, r2, "loss of micro-batch 2");
        assertClose(`${label} accumulated gradients`, zGrads(), refGrads(), {
          atol: 1e-6,
          rtol: 1e-5,
        });
        // the full values come back for saving
        const saved = await sharded.withFullParams(() =>
          frozen ? frozen.withFullParams(() => z.stateDict()) : z.stateDict()
        );
        for (const [n, t] of ref.stateDict()) assert.deepEqual(saved.get(n)!.data, t.data, n);
        sharded.free();
        frozen?.free();
        ref.free();
        z.free();
      });
    }
  }
}
