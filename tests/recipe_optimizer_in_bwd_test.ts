/**
 * optimizer_in_bwd=True through the real CLI: each parameter group steps inside the backward
 * (src/training/optimizer_in_bwd.ts). Full and LoRA fine-tuning on the tiny configs, with
 * torch.optim.AdamW and bitsandbytes.optim.AdamW8bit, give the ordinary path's losses bit
 * for bit and the same saved weights (grad_norm, summed group by group, within 1e-6
 * relative); a run stopped and resumed equals the straight run bitwise (the recipe_state
 * format is the ordinary one, so an ordinary run resumes it bitwise too); torchtune's
 * refusals (clipping, accumulation) are one line each.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { readMetrics, runOk, timeless, tune, withTmp } from "./_recipe_helpers.ts";

const FULL = ["full_finetune_single_device", "--config", "tiny/full_single_device"];
const LORA = ["lora_finetune_single_device", "--config", "tiny/lora_single_device"];
// torchtune refuses clipping with optimizer_in_bwd; both runs go without it
const BASE = ["clip_grad_norm=null", "epochs=1", "max_steps_per_epoch=6"];
const EIGHT_BIT = [
  "optimizer._component_=bitsandbytes.optim.AdamW8bit",
  "optimizer.min_8bit_size=512",
];
const IN_BWD = "optimizer_in_bwd=True";

function sameWeights(a: string, b: string, file: string): void {
  const x = Deno.readFileSync(join(a, "epoch_0", file));
  const y = Deno.readFileSync(join(b, "epoch_0", file));
  assert.ok(x.length === y.length && x.every((v, i) => v === y[i]), `${file} differs`);
}

function compare(label: string, plain: string, inBwd: string): void {
  const p = readMetrics(plain), q = readMetrics(inBwd);
  assert.equal(q.length, 6);
  assert.deepEqual(q.map((m) => m.loss), p.map((m) => m.loss), `${label}: losses`);
  assert.deepEqual(q.map((m) => m.lr), p.map((m) => m.lr), `${label}: lr`);
  let worst = 0;
  for (let i = 0; i < p.length; i++) {
    worst = Math.max(worst, Math.abs(q[i].grad_norm - p[i].grad_norm) / p[i].grad_norm);
  }
  console.log(
    `${label}: losses ${q.map((m) => m.loss.toFixed(6)).join(" ")} equal bitwise; ` +
      `grad_norm worst rel diff ${worst.toExponential(2)}`,
  );
  assert.ok(worst <= 1e-6, `${label}: grad_norm differs by ${worst} relative`);
}

for (
  const [label, recipe, opt, weights] of [
    ["full AdamW", FULL, [], "model.safetensors"],
    ["full AdamW8bit", FULL, EIGHT_BIT, "model.safetensors"],
    ["LoRA AdamW", LORA, [], "adapter_model.safetensors"],
    ["LoRA AdamW8bit", LORA, EIGHT_BIT, "adapter_model.safetensors"],
  ] as const
) {
  Deno.test(`optimizer_in_bwd=True gives the ordinary losses and weights bitwise (${label})`, async () => {
    await withTmp(async (dir) => {
      const plain = join(dir, "plain"), inBwd = join(dir, "in_bwd");
      await runOk(...recipe, ...BASE, ...opt, `output_dir=${plain}`);
      const r = await runOk(
        ...recipe,
        ...BASE,
        ...opt,
        IN_BWD,
        "log_peak_memory_stats=True",
        `output_dir=${inBwd}`,
      );
      // the in-backward path ran (its memory line), and says what it holds
      const line = r.stderr.split("\n").find((l) =>
        l.startsWith("optimizer_in_bwd: gradient bytes")
      );
      assert.ok(line, "optimizer_in_bwd's memory line");
      console.log(`${label}: ${line}`);
      compare(label, plain, inBwd);
      sameWeights(plain, inBwd, weights);
    });
  });
}

Deno.test("optimizer_in_bwd=True resumes bitwise (AdamW8bit, and AdamW into an ordinary run)", async () => {
  await withTmp(async (dir) => {
    const whole = join(dir, "whole"), parts = join(dir, "parts"), mixed = join(dir, "mixed");
    await runOk(...FULL, ...BASE, ...EIGHT_BIT, IN_BWD, `output_dir=${whole}`);
    await runOk(
      ...FULL,
      ...BASE,
      ...EIGHT_BIT,
      IN_BWD,
      `output_dir=${parts}`,
      "stop_after_steps=3",
    );
    await runOk(
      ...FULL,
      ...BASE,
      ...EIGHT_BIT,
      IN_BWD,
      `output_dir=${parts}`,
      "resume_from_checkpoint=True",
    );
    assert.deepEqual(readMetrics(parts).map(timeless), readMetrics(whole).map(timeless));
    // the checkpoint of an in-backward run is an ordinary one: the ordinary path resumes it
    const plain = join(dir, "plain");
    await runOk(...LORA, ...BASE, `output_dir=${plain}`);
    await runOk(...LORA, ...BASE, IN_BWD, `output_dir=${mixed}`, "stop_after_steps=3");
    await runOk(...LORA, ...BASE, `output_dir=${mixed}`, "resume_from_checkpoint=True");
    const losses = (d: string) => readMetrics(d).map((m) => m.loss);
    assert.deepEqual(losses(mixed), losses(plain));
  });
});

Deno.test("optimizer_in_bwd=True with clipping or gradient accumulation is refused in one line (torchtune's messages)", async () => {
  const last = (x: string) => x.trim().split("\n").at(-1)!;
  const clip = await tune("run", ...FULL, IN_BWD, "output_dir=/tmp/tune_never");
  assert.notEqual(clip.code, 0);
  assert.match(
    last(clip.stderr),
    /^tune: Gradient clipping is not supported with optimizer_in_bwd: True/,
  );
  assert.doesNotMatch(clip.stderr, /\bat /);
  const ga = await tune(
    "run",
    ...LORA,
    IN_BWD,
    "clip_grad_norm=null",
    "gradient_accumulation_steps=2",
    "output_dir=/tmp/tune_never",
  );
  assert.notEqual(ga.code, 0);
  assert.match(
    last(ga.stderr),
    /^tune: Gradient accumulation is not supported with optimizer_in_bwd: True/,
  );
});

Deno.test("optimizer_in_bwd=True with clipping on 2 ranks and fsdp_cpu_offload=True on the CPU are refused in one line", async () => {
  const last = (x: string) => x.trim().split("\n").at(-1)!;
  const off = await tune(
    "run",
    "lora_finetune_distributed",
    "--config",
    "tiny/lora_distributed",
    "fsdp_cpu_offload=True",
    "output_dir=/tmp/tune_never",
  );
  assert.notEqual(off.code, 0);
  assert.match(last(off.stderr), /^tune: fsdp_cpu_offload=True .* device=cpu it is already there/);
  const two = await tune(
    "run",
    "--nproc_per_node",
    "2",
    "full_finetune_distributed",
    "--config",
    "tiny/full_distributed",
    IN_BWD,
    "output_dir=/tmp/tune_never",
  );
  assert.notEqual(two.code, 0);
  // it runs on 2 ranks now (tests/recipe_qlora_distributed_test.ts); torchtune's refusal stays
  assert.match(two.stderr, /tune: Gradient clipping is not supported with optimizer_in_bwd/);
  assert.doesNotMatch(two.stderr, /\bat /);
});
