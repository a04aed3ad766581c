/**
 * knowledge_distillation_single_device as the real CLI in a subprocess: pinned losses of
 * tiny/kd_single_device (1e-4 abs, the same under TUNE_CPU_MATMUL=ts) with loss = (1 - r)
 * class_loss + r kd_loss per step, bitwise resume, distillation from a teacher trained by
 * full_finetune_single_device (read through teacher_checkpointer) lowering the KD loss, and
 * one-line errors. The arithmetic itself is checked against PyTorch in distill_test.ts.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  assertLosses,
  exists,
  readMetrics,
  runOk,
  timeless,
  tune,
  withTmp,
} from "./_recipe_helpers.ts";

const CONFIG = ["knowledge_distillation_single_device", "--config", "tiny/kd_single_device"];
const SHORT = ["epochs=2", "max_steps_per_epoch=3"];

// 2 epochs of 3 steps, seed 0 (recorded from this implementation after checking that step
// 1's class loss is ~ln(320) = 5.77 for the fresh student and the loss is the mix below).
const KD_LOSSES = [5.776951, 5.768538, 5.740424, 5.683539, 5.601834, 5.553624];

Deno.test("knowledge_distillation_single_device pins its losses, logs class_loss and kd_loss, writes the student", async () => {
  await withTmp(async (dir) => {
    const out = join(dir, "kd");
    const r = await runOk(...CONFIG, `output_dir=${out}`, ...SHORT);
    const m = readMetrics(out);
    assertLosses("kd", m.map((x) => x.loss), KD_LOSSES, 1e-4);
    for (const x of m) {
      assert.ok(Math.abs(x.loss - (0.5 * x.class_loss + 0.5 * x.kd_loss)) < 1e-9);
    }
    assert.ok(Math.abs(m[0].class_loss - Math.log(320)) < 0.05, "fresh student: ~ln V");
    for (const f of ["adapter_model.safetensors", "adapter_config.json", "model.safetensors"]) {
      assert.ok(exists(join(out, "epoch_1", f)), `epoch_1/${f} written`);
    }
    assert.match(r.stdout, /knowledge_distillation_single_device: 6 steps, \d+ tokens in/);
  });
});

Deno.test("knowledge_distillation_single_device resumes from a mid-run checkpoint with bitwise-identical metrics", async () => {
  await withTmp(async (dir) => {
    const whole = join(dir, "whole"), cut = join(dir, "cut");
    const drop = "model.lora_dropout=0.1";
    await runOk(...CONFIG, `output_dir=${whole}`, ...SHORT, drop);
    await runOk(...CONFIG, `output_dir=${cut}`, ...SHORT, drop, "stop_after_steps=2");
    await runOk(...CONFIG, `output_dir=${cut}`, ...SHORT, drop, "resume_from_checkpoint=True");
    const a = readMetrics(whole).map(timeless), b = readMetrics(cut).map(timeless);
    assert.equal(a.length, 6);
    assert.deepEqual(b, a);
  });
});

Deno.test("knowledge_distillation_single_device distils a teacher read from its checkpoint: the KD loss falls", async () => {
  await withTmp(async (dir) => {
    const teacherDir = join(dir, "teacher"), out = join(dir, "kd");
    await runOk(
      "full_finetune_single_device",
      "--config",
      "tiny/full_single_device",
      `output_dir=${teacherDir}`,
    );
    await runOk(
      ...CONFIG,
      `output_dir=${out}`,
      "teacher_model_init=checkpoint",
      // the teacher is tiny/full_single_device's model
      "teacher_model.embed_dim=64",
      "teacher_model.num_layers=2",
      "teacher_model.num_kv_heads=2",
      "teacher_model.intermediate_dim=176",
      `teacher_checkpointer.checkpoint_dir=${join(teacherDir, "epoch_1")}`,
      "kd_ratio=1.0",
      "epochs=1",
      "max_steps_per_epoch=8",
    );
    const kd = readMetrics(out).map((x) => x.kd_loss);
    console.log(`kd from a trained teacher: kd_loss ${kd.map((x) => x.toFixed(4)).join(" ")}`);
    assert.ok(kd[kd.length - 1] < kd[0] - 0.3, `kd_loss should fall: ${kd}`);
  });
});

Deno.test("knowledge_distillation_single_device names the problem in one line: vocabulary, teacher weights, kd_ratio", async () => {
  const cases: [string[], RegExp][] = [
    [
      ["teacher_model.vocab_size=256"],
      /^tune: teacher vocabulary 256 differs from the student's 320; distillation needs one tokenizer for both$/,
    ],
    [
      ["teacher_model_init=checkpoint", "~teacher_checkpointer"],
      /^tune: teacher_checkpointer is not set; point it at the teacher's weights/,
    ],
    [["kd_ratio=1.5"], /^tune: bad value for 'kd_ratio': 1.5 must be in \[0, 1\]$/],
  ];
  for (const [args, want] of cases) {
    const r = await tune("run", ...CONFIG, "output_dir=/tmp/tune_kd_err", ...args);
    assert.notEqual(r.code, 0);
    const last = r.stderr.trim().split("\n").pop()!; // after the "running ... with config" line
    assert.match(last, want);
  }
});
