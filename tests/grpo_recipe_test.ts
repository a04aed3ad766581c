/**
 * grpo_finetune_single_device as the real CLI in a subprocess on tiny/grpo_single_device
 * (seeded random LoRA model, 4 generation rounds of 2 prompts x 4 completions, ppo_epochs 2):
 * pinned losses (1e-4 abs) and rewards (1e-9: discrete rewards of seeded samples), its
 * metrics and completions.jsonl, bitwise resume from a round boundary, and one-line errors.
 * The loss arithmetic itself is checked against PyTorch in grpo_loss_test.ts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { assertLosses, exists, readMetrics, runOk, tune, withTmp } from "./_recipe_helpers.ts";

const CONFIG = ["grpo_finetune_single_device", "--config", "tiny/grpo_single_device"];

// seed 0, recorded from this implementation. Steps 1 and 2 are exactly 0: the ratio is 1
// (step 1: on-policy; step 2: lr 0 at warmup step 1 left the policy as it generated), KL is
// 0 (LoRA B starts at 0) and the group advantages sum to 0, so the mean policy term is 0.
const LOSSES = [0, 0, 0.000063, -0.064632, 0.00014, -0.08042, 0.000483, 0.000525];
const REWARDS = [-0.0375, -0.0375, 0.025, 0.025, 0.0875, 0.0875, -0.1, -0.1];

const GRPO_METRICS = [
  "reward",
  "reward_std",
  "rewards/exact_match/mean",
  "rewards/regex_match/std",
  "rewards/length_penalty/mean",
  "success_rate",
  "completion_length",
  "kl",
  "clip_ratio/low_mean",
  "clip_ratio/high_mean",
  "clip_ratio/region_mean",
  "entropy",
  "generation_tokens_per_s",
];

/** A metrics line without its wall-clock fields. */
function timeless(m: Record<string, number>): string {
  const { tokens_per_s: _t, generation_tokens_per_s: _g, ...rest } = m;
  return JSON.stringify(rest);
}

Deno.test("grpo_finetune_single_device pins its losses and rewards and writes GRPO metrics", async () => {
  await withTmp(async (dir) => {
    const out = join(dir, "grpo");
    const r = await runOk(...CONFIG, `output_dir=${out}`);
    const m = readMetrics(out);
    assertLosses("grpo", m.map((x) => x.loss), LOSSES, 1e-4);
    assertLosses("grpo rewards", m.map((x) => x.reward), REWARDS, 1e-9);
    for (const x of m) {
      for (const k of GRPO_METRICS) assert.equal(typeof x[k], "number", `metrics has ${k}`);
      assert.ok(x.success_rate >= 0 && x.success_rate <= 1);
      assert.ok(x.kl >= 0 && x.entropy > 0 && x.completion_length > 0);
    }
    assert.equal(m[0].kl, 0, "LoRA B = 0: the policy is the reference at step 1");
    assert.ok(m.some((x) => x["clip_ratio/region_mean"] > 0), "second ppo epochs clip");
    assert.ok(m.some((x) => x.kl > 0), "the policy moves away from the reference");
    const lines = Deno.readTextFileSync(join(out, "completions.jsonl")).trim().split("\n");
    assert.equal(lines.length, 8, "2 prompts at each of the 4 rounds with an even step");
    assert.equal(typeof JSON.parse(lines[0]).completion, "string");
    assert.ok(exists(join(out, "step_8", "adapter_model.safetensors")));
    assert.match(r.stdout, /grpo_finetune_single_device: 8 steps, \d+ tokens in/);
    assert.match(r.stdout + r.stderr, /8\/8 loss=[-0-9.]+ reward=-0\.100 success=0\.00/);
    assert.match(Deno.readTextFileSync(join(out, "reward_curve.svg")), /mean reward/);
  });
});

Deno.test("grpo_finetune_single_device resumes from a round boundary with bitwise-identical metrics", async () => {
  await withTmp(async (dir) => {
    const whole = join(dir, "whole"), cut = join(dir, "cut");
    await runOk(...CONFIG, `output_dir=${whole}`);
    await runOk(...CONFIG, `output_dir=${cut}`, "stop_after_steps=4");
    await runOk(...CONFIG, `output_dir=${cut}`, "resume_from_checkpoint=True");
    const a = readMetrics(whole).map(timeless), b = readMetrics(cut).map(timeless);
    assert.equal(a.length, 8);
    assert.deepEqual(b, a);
  });
});

Deno.test("2 CPU ranks of grpo_finetune_distributed give the single-device losses and rewards (1e-6 relative)", async () => {
  await withTmp(async (dir) => {
    const one = join(dir, "one"), two = join(dir, "two");
    await runOk(...CONFIG, `output_dir=${one}`);
    // torchtune's dev recipe name picks the distributed recipe under launcher flags
    await runOk(
      "--nproc_per_node",
      "2",
      "dev/grpo_full_finetune_distributed",
      "--config",
      "tiny/grpo_single_device",
      `output_dir=${two}`,
    );
    const a = readMetrics(one), b = readMetrics(two);
    assert.equal(b.length, a.length);
    let worst = 0, worstNorm = 0;
    const rel = (i: number, k: string) =>
      Math.abs(a[i][k] - b[i][k]) / Math.max(1e-3, Math.abs(a[i][k]));
    for (let i = 0; i < a.length; i++) {
      for (const k of ["loss", "reward", "kl", "entropy"]) worst = Math.max(worst, rel(i, k));
      // stds come from sums of squares: their rounding is absolute, near 1e-9 of a zero std
      assert.ok(Math.abs(a[i].reward_std - b[i].reward_std) < 1e-7, "reward_std");
      // the fp32 gradient norm sums its squares shard by shard
      worstNorm = Math.max(worstNorm, rel(i, "grad_norm"));
      assert.equal(b[i]["clip_ratio/region_mean"], a[i]["clip_ratio/region_mean"]);
      assert.equal(b[i].completion_length, a[i].completion_length);
    }
    console.log(
      `2 ranks vs 1 device: worst relative difference ${worst.toExponential(2)} ` +
        `(loss, reward, kl, entropy), grad_norm ${worstNorm.toExponential(2)}`,
    );
    assert.ok(worst <= 1e-6, `relative difference ${worst}`);
    assert.ok(worstNorm <= 1e-5, `grad_norm relative difference ${worstNorm}`);
    assert.ok(exists(join(two, "step_8", "adapter_model.safetensors")));
  });
});

// full fine-tuning: the tiny config's model without adapters (the reference is a frozen copy)
const FULL = [
  "model._component_=tune.models.llama",
  "~model.lora_attn_modules",
  "~model.apply_lora_to_mlp",
  "~model.apply_lora_to_output",
  "~model.lora_rank",
  "~model.lora_alpha",
  "~model.lora_dropout",
  "~save_adapter_weights_only",
  "optimizer.lr=1e-3",
];
const FULL_LOSSES = [0, 0, 0.000034, -0.056038, 0.000139, -0.078321, 0.000305, -0.032528];

Deno.test("GRPO fine-tunes a model without adapters against a frozen copy, on 1 and 2 ranks", async () => {
  await withTmp(async (dir) => {
    const one = join(dir, "one"), two = join(dir, "two");
    await runOk(...CONFIG, `output_dir=${one}`, ...FULL);
    const a = readMetrics(one);
    assertLosses("grpo full", a.map((x) => x.loss), FULL_LOSSES, 1e-4);
    assert.equal(a[0].kl, 0, "the reference is the starting weights");
    assert.ok(a.at(-1)!.kl > 0);
    assert.ok(exists(join(one, "step_8", "model.safetensors")));
    await runOk(
      "--nproc_per_node",
      "2",
      "grpo_finetune_distributed",
      "--config",
      "tiny/grpo_single_device",
      `output_dir=${two}`,
      ...FULL,
    );
    const b = readMetrics(two);
    // fp32 ZeRO-3 sums gradients shard by shard: full updates drift at 1e-7 relative
    let worst = 0;
    for (let i = 0; i < a.length; i++) {
      for (const k of ["loss", "reward", "kl"]) {
        worst = Math.max(worst, Math.abs(a[i][k] - b[i][k]) / Math.max(1e-3, Math.abs(a[i][k])));
      }
    }
    console.log(`full, 2 ranks vs 1 device: worst relative difference ${worst.toExponential(2)}`);
    assert.ok(worst <= 1e-5, `relative difference ${worst}`);
  });
});

Deno.test("grpo_finetune_single_device refuses mid-round checkpoints and bad sizes in one line", async () => {
  const cases: [string, RegExp][] = [
    ["stop_after_steps=3", /^tune: stop_after_steps=3: checkpoints fall on generation rounds/],
    [
      "forward_batch_size=3",
      /^tune: forward_batch_size=3: must divide batch_size \* grpo_samples = 8$/,
    ],
    ["grpo_samples=1", /^tune: grpo_samples=1: group advantages need at least 2/],
    [
      "reward_fns.0._component_=tune.datasets.alpaca_dataset",
      /a dataset builder; 'reward_fns.0' needs a reward builder$/,
    ],
  ];
  for (const [arg, re] of cases) {
    const r = await tune("run", ...CONFIG, "output_dir=/tmp/grpo_refused", arg);
    assert.notEqual(r.code, 0, arg);
    assert.match(r.stderr.trim().split("\n").at(-1)!, re);
  }
});
