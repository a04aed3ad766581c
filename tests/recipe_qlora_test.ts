/**
 * QLoRA through the real CLI: lora_finetune_single_device on configs/tiny/qlora_single_device
 * (quantize_base: True) pins its 10 losses (1e-4 abs), resumes bitwise from a mid-epoch
 * checkpoint (the NF4 base is quantized again from the same source), and its merged
 * model.safetensors (dequantized base + adapter) gives the logits of NF4 base + the saved
 * PEFT adapter; bitsandbytes' PagedAdamW8bit pins its losses and resumes bitwise, PagedAdamW
 * equals AdamW; the refused memory options. (torchtune's QLoRA / bitsandbytes configs are
 * validated by tests/torchtune_configs_test.ts.)
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import "../src/components.ts";
import {
  assertLosses,
  exists,
  readMetrics,
  runOk,
  timeless,
  tune,
  withTmp,
} from "./_recipe_helpers.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { loadHfCheckpoint } from "../src/checkpoint/hf_checkpoint.ts";
import { loadPeftAdapter } from "../src/checkpoint/peft.ts";
import { createLlama } from "../src/models/llama/model.ts";
import { instantiate } from "../src/config/instantiate.ts";
import { loadRecipeConfig } from "../src/config/load.ts";
import { findRecipe } from "../recipes/registry.ts";
import { defaultLaunchOptions } from "../src/config/recipe.ts";
import type { ModelSpec } from "../src/models/model_spec.ts";

const CONFIG = ["lora_finetune_single_device", "--config", "tiny/qlora_single_device"];

// tiny/qlora_single_device, 2 epochs of 5 steps, seed 0, recorded from this implementation
// (whose QLoRA step matches PyTorch in tests/quant_qlora_test.ts)
const QLORA_LOSSES = [
  5.824730,
  5.835411,
  5.721017,
  5.335396,
  5.250001,
  5.234350,
  5.208820,
  5.224523,
  5.240483,
  5.158360,
];

Deno.test("lora_finetune_single_device on tiny/qlora_single_device pins its losses; the merged model gives the NF4 + adapter logits", async () => {
  await withTmp(async (dir) => {
    const out = join(dir, "qlora");
    await runOk(...CONFIG, `output_dir=${out}`);
    assertLosses("qlora", readMetrics(out).map((x) => x.loss), QLORA_LOSSES, 1e-4);
    const ep = join(out, "epoch_1");
    assert.ok(exists(join(ep, "adapter_model.safetensors")), "PEFT adapter written");
    // the NF4 model as the run built it (seed 0) with the saved adapter, vs the merged file
    const recipe = findRecipe("lora_finetune_single_device", defaultLaunchOptions());
    const { config } = loadRecipeConfig(recipe, "tiny/qlora_single_device", []);
    const spec = instantiate<ModelSpec>(config.model as never);
    assert.equal(spec.lora?.quantizeBase, true);
    const be = new CpuBackend();
    const B = 2, T = 16;
    const q = createLlama(be, spec, { batch: B, seqLen: T, training: false });
    q.initRandom(0);
    for (const [n, t] of loadPeftAdapter(ep, spec.config)) q.adapters!.setTensor(n, t);
    const merged = loadHfCheckpoint(ep);
    // q/k rows lie as the file's format has them (its rope layout): the same model
    const plain = createLlama(
      be,
      { ...spec, config: { ...spec.config, ropeLayout: merged.config.ropeLayout }, lora: null },
      { batch: B, seqLen: T, training: false },
    );
    plain.loadStateDict(merged.stateDict);
    const tokens = Int32Array.from({ length: B * T }, (_, i) => (i * 37 + 11) % 320);
    const a = be.download(q.forward(tokens)) as Float32Array;
    const b = be.download(plain.forward(tokens)) as Float32Array;
    let worst = 0, scale = 0;
    for (let i = 0; i < a.length; i++) {
      worst = Math.max(worst, Math.abs(a[i] - b[i]));
      scale = Math.max(scale, Math.abs(a[i]));
    }
    console.log(
      `qlora: merged ${
        merged.stateDict.get("layers.0.attn.q_proj.weight")!.sourceDtype
      } checkpoint vs NF4 + adapter logits: max |diff| ${worst.toExponential(2)} (max |logit| ${
        scale.toFixed(2)
      })`,
    );
    assert.ok(worst <= 1e-4, `merged logits differ by ${worst}`);
    q.free();
    plain.free();
  });
});

Deno.test("lora_finetune_single_device on tiny/qlora_single_device resumed from a mid-epoch checkpoint reproduces the remaining steps bitwise", async () => {
  await withTmp(async (dir) => {
    const whole = join(dir, "whole"), parts = join(dir, "parts");
    const cfg = [...CONFIG, "model.lora_dropout=0.1"];
    await runOk(...cfg, `output_dir=${whole}`);
    await runOk(...cfg, `output_dir=${parts}`, "stop_after_steps=4");
    assert.ok(exists(join(parts, "step_4")), "step_4/ written");
    await runOk(...cfg, `output_dir=${parts}`, "resume_from_checkpoint=True");
    const a = readMetrics(whole).map(timeless), b = readMetrics(parts).map(timeless);
    console.log(`qlora: resumed steps 5-10 ${b.slice(4).join(" ")}`);
    assert.deepEqual(b, a, "metrics.jsonl of the resumed run equals the uninterrupted run");
  });
});

// the same run with bitsandbytes.optim.PagedAdamW8bit, min_8bit_size 512 so every adapter
// tensor (1024 or more elements) keeps 8-bit moments (recorded from this implementation, whose
// 8-bit update matches the bitsandbytes reference in tests/quant_adamw8bit_test.ts)
const EIGHT_BIT = [
  "optimizer._component_=bitsandbytes.optim.PagedAdamW8bit",
  "optimizer.min_8bit_size=512",
];
const EIGHT_BIT_LOSSES = [
  5.824730,
  5.835411,
  5.721001,
  5.335377,
  5.249856,
  5.234361,
  5.208849,
  5.224561,
  5.240329,
  5.158252,
];

Deno.test("QLoRA with bitsandbytes' PagedAdamW8bit pins its losses and resumes bitwise; PagedAdamW is AdamW on the CPU", async () => {
  await withTmp(async (dir) => {
    const whole = join(dir, "whole"), parts = join(dir, "parts");
    const paged = join(dir, "paged"), plain = join(dir, "plain");
    await runOk(...CONFIG, ...EIGHT_BIT, `output_dir=${whole}`);
    assertLosses(
      "qlora + 8-bit AdamW",
      readMetrics(whole).map((x) => x.loss),
      EIGHT_BIT_LOSSES,
      1e-4,
    );
    await runOk(...CONFIG, ...EIGHT_BIT, `output_dir=${parts}`, "stop_after_steps=4");
    await runOk(...CONFIG, ...EIGHT_BIT, `output_dir=${parts}`, "resume_from_checkpoint=True");
    assert.deepEqual(readMetrics(parts).map(timeless), readMetrics(whole).map(timeless));
    await runOk(
      ...CONFIG,
      "optimizer._component_=bitsandbytes.optim.PagedAdamW",
      `output_dir=${paged}`,
    );
    await runOk(...CONFIG, `output_dir=${plain}`);
    assert.deepEqual(readMetrics(paged).map(timeless), readMetrics(plain).map(timeless));
  });
});

Deno.test("enable_activation_offloading=True on the CPU, and optimizer_in_bwd=True with clipping, are refused in one line", async () => {
  const r = await tune(
    "run",
    ...CONFIG,
    "enable_activation_offloading=True",
    "output_dir=/tmp/tune_never",
  );
  assert.notEqual(r.code, 0);
  // the last stderr line (the first says which recipe runs), no stack trace
  const last = (x: string) => x.trim().split("\n").at(-1)!;
  assert.match(last(r.stderr), /^tune: enable_activation_offloading=True .* device=cpu /);
  assert.doesNotMatch(r.stderr, /\bat /);
  const f = await tune(
    "run",
    "full_finetune_single_device",
    "--config",
    "tiny/full_single_device",
    "optimizer_in_bwd=True",
    "output_dir=/tmp/tune_never",
  );
  assert.notEqual(f.code, 0);
  // optimizer_in_bwd is implemented now; with the config's clipping torchtune refuses it
  assert.match(last(f.stderr), /^tune: Gradient clipping is not supported with optimizer_in_bwd/);
});
