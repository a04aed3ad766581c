/**
 * Validation during training (torchtune's dataset_val + run_val_every_n_steps) as the real
 * CLI: val_loss on exactly every n-th step, the training losses unchanged, the last val_loss
 * equal to the eval recipe's loss on the saved checkpoint (1e-6 abs: the same tokens, other
 * batch shapes), LoRA and knowledge distillation too, and a one-line error without dataset_val.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { readMetrics, runOk, tune, withTmp } from "./_recipe_helpers.ts";

const SHORT = ["epochs=2", "max_steps_per_epoch=3"];
const VAL = [
  "run_val_every_n_steps=2",
  "dataset_val._component_=torchtune.datasets.text_completion_dataset",
  "dataset_val.source=text",
  "dataset_val.data_files=tests/fixtures/tiny/stories.txt",
  "dataset_val.sample_by=line",
];

Deno.test("full_finetune_single_device logs val_loss every n steps; the last equals the eval recipe's loss", async () => {
  await withTmp(async (dir) => {
    const plain = join(dir, "plain"), val = join(dir, "val");
    const cfg = ["full_finetune_single_device", "--config", "tiny/full_single_device", ...SHORT];
    await runOk(...cfg, `output_dir=${plain}`);
    await runOk(...cfg, `output_dir=${val}`, ...VAL);
    const m = readMetrics(val);
    assert.deepEqual(m.filter((x) => "val_loss" in x).map((x) => x.step), [2, 4, 6]);
    assert.deepEqual(m.map((x) => x.loss), readMetrics(plain).map((x) => x.loss));
    const e = await runOk(
      "eval",
      "--config",
      "tiny/eval",
      `output_dir=${join(dir, "eval")}`,
      "model_init=checkpoint",
      `checkpointer.checkpoint_dir=${join(val, "epoch_1")}`,
    );
    const results = JSON.parse(Deno.readTextFileSync(join(dir, "eval", "eval_results.json")));
    const last = m[m.length - 1].val_loss;
    console.log(`val_loss at step 6 ${last.toFixed(6)}; eval recipe ${results.loss.toFixed(6)}`);
    assert.ok(Math.abs(last - results.loss) < 1e-6, e.stdout);
    assert.ok(m[1].val_loss > last, "the validation loss falls as training goes on");
  });
});

Deno.test("lora_finetune_single_device and knowledge_distillation_single_device log val_loss too", async () => {
  await withTmp(async (dir) => {
    for (
      const [recipe, config] of [
        ["lora_finetune_single_device", "tiny/lora_single_device"],
        ["knowledge_distillation_single_device", "tiny/kd_single_device"],
      ]
    ) {
      const out = join(dir, recipe);
      await runOk(recipe, "--config", config, `output_dir=${out}`, ...SHORT, ...VAL);
      const m = readMetrics(out);
      assert.deepEqual(m.filter((x) => "val_loss" in x).map((x) => x.step), [2, 4, 6], recipe);
      for (const x of m.filter((x) => "val_loss" in x)) {
        assert.ok(x.val_loss > 0 && Number.isFinite(x.val_loss), `${recipe}: ${x.val_loss}`);
      }
    }
  });
});

Deno.test("run_val_every_n_steps without dataset_val is a one-line error naming the fix", async () => {
  const r = await tune(
    "run",
    "lora_finetune_single_device",
    "--config",
    "tiny/lora_single_device",
    "output_dir=/tmp/tune_val_err",
    "run_val_every_n_steps=2",
  );
  assert.notEqual(r.code, 0);
  assert.match(
    r.stderr.trim().split("\n").pop()!,
    /^tune: run_val_every_n_steps is set but dataset_val is not; add a dataset_val section/,
  );
});

Deno.test("full_finetune_distributed and lora_finetune_distributed on 2 ranks log the single-device val_loss", async () => {
  await withTmp(async (dir) => {
    for (const [kind, batch] of [["full", "4"], ["lora", "4"]]) {
      const one = join(dir, `${kind}_one`), two = join(dir, `${kind}_two`);
      await runOk(
        `${kind}_finetune_single_device`,
        "--config",
        `tiny/${kind}_single_device`,
        `output_dir=${one}`,
        `batch_size=${batch}`,
        "seed=0",
        ...SHORT,
        ...VAL,
      );
      await runOk(
        "--nproc_per_node",
        "2",
        `${kind}_finetune_distributed`,
        "--config",
        `tiny/${kind}_distributed`,
        `output_dir=${two}`,
        "seed=0",
        ...SHORT,
        ...VAL,
      );
      const a = readMetrics(two).filter((x) => "val_loss" in x);
      const b = readMetrics(one).filter((x) => "val_loss" in x);
      assert.deepEqual(a.map((x) => x.step), [2, 4, 6], kind);
      const worst = Math.max(
        ...a.map((x, i) => Math.abs(x.val_loss - b[i].val_loss) / b[i].val_loss),
      );
      console.log(
        `${kind}: val_loss on 2 ranks vs one device, worst relative diff ${worst.toExponential(2)}`,
      );
      assert.ok(worst <= 1e-5, `${kind}: val_loss differs by ${worst}`);
    }
  });
});
