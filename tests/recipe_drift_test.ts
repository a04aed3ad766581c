/**
 * The drift test: every training recipe honours stop_after_steps, max_steps_per_epoch,
 * resume and validation the same way on 1 process (its `_single_device` entry) and on 2
 * (its `_distributed` entry, `--nproc_per_node 2`), on the tiny configs (the same global
 * batch, so the same steps and losses within 1e-5 relative):
 *
 *   1. epochs=2 max_steps_per_epoch=2 stop_after_steps=3 (validation every 2 steps): steps
 *      1-3 run, epoch_0 is saved at the epoch end and step_3 at the stop;
 *   2. resuming with stop_after_steps=3 again runs no step and writes nothing new;
 *   3. resuming without it runs step 4 and saves epoch_1.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type Metrics, readMetrics, tune, withTmp } from "./_recipe_helpers.ts";

const VAL = [
  "run_val_every_n_steps=2",
  "dataset_val._component_=torchtune.datasets.text_completion_dataset",
  "dataset_val.source=text",
  "dataset_val.data_files=tests/fixtures/tiny/stories.txt",
  "dataset_val.sample_by=line",
];

const RECIPES = [
  { method: "full_finetune", config: "full", val: true },
  { method: "lora_finetune", config: "lora", val: true },
  { method: "lora_dpo", config: "lora_dpo", val: false },
  { method: "knowledge_distillation", config: "kd", val: true },
];

/** What one world size did: per stage the metrics, the checkpoint folders and the resume line. */
interface Trace {
  metrics: Metrics[];
  dirs: string[][];
  resumed: string[];
}

async function trace(recipe: typeof RECIPES[number], world: 1 | 2, out: string): Promise<Trace> {
  const kind = world === 1 ? "single_device" : "distributed";
  const cmd = [
    "run",
    ...(world === 2 ? ["--nproc_per_node", "2"] : []),
    `${recipe.method}_${kind}`,
    "--config",
    `tiny/${recipe.config}_${kind}`,
    `output_dir=${out}`,
    "seed=0",
    "epochs=2",
    "max_steps_per_epoch=2",
    ...(recipe.val ? VAL : []),
  ];
  const stages = [
    ["stop_after_steps=3"],
    ["stop_after_steps=3", "resume_from_checkpoint=True"],
    ["resume_from_checkpoint=True"],
  ];
  const t: Trace = { metrics: [], dirs: [], resumed: [] };
  for (const extra of stages) {
    const r = await tune(...cmd, ...extra);
    assert.equal(r.code, 0, `${cmd.join(" ")} ${extra.join(" ")}:\n${r.stderr}`);
    t.metrics.push(readMetrics(out));
    t.dirs.push(
      [...Deno.readDirSync(out)].filter((e) => /^(epoch|step)_/.test(e.name)).map((e) => e.name)
        .sort(),
    );
    t.resumed.push(r.stderr.match(/^resuming from step \d+ \(epoch \d+\) of .*$/m)?.[0] ?? "");
  }
  return t;
}

for (const recipe of RECIPES) {
  Deno.test(`${recipe.method}: stop_after_steps, max_steps_per_epoch, resume and validation agree on 1 and 2 processes`, async () => {
    await withTmp(async (dir) => {
      const one = await trace(recipe, 1, join(dir, "one"));
      const two = await trace(recipe, 2, join(dir, "two"));
      for (const t of [one, two]) {
        assert.deepEqual(t.metrics.map((m) => m.map((x) => x.step)), [[1, 2, 3], [1, 2, 3], [
          1,
          2,
          3,
          4,
        ]]);
        assert.deepEqual(t.metrics[2].map((x) => x.epoch), [0, 0, 1, 1]);
        assert.deepEqual(t.dirs, [
          ["epoch_0", "step_3"],
          ["epoch_0", "step_3"],
          ["epoch_0", "epoch_1", "step_3"],
        ]);
        assert.equal(t.resumed[0], "");
        assert.match(t.resumed[1], /^resuming from step 3 \(epoch 2\) of .*recipe_state$/);
        assert.match(t.resumed[2], /^resuming from step 3 \(epoch 2\) of .*recipe_state$/);
        const val = t.metrics[2].filter((x) => "val_loss" in x).map((x) => x.step);
        assert.deepEqual(val, recipe.val ? [2, 4] : []);
      }
      let worst = 0;
      for (const [a, b] of one.metrics[2].map((x, i) => [x, two.metrics[2][i]])) {
        assert.equal(a.tokens, b.tokens, `${recipe.method}: global tokens of step ${a.step}`);
        for (const k of ["loss", "val_loss"]) {
          if (k in a) worst = Math.max(worst, Math.abs(a[k] - b[k]) / Math.abs(a[k]));
        }
      }
      console.log(
        `${recipe.method}: steps 1-3, stop, no-op resume, step 4 on 1 and 2 processes; ` +
          `worst relative loss diff ${worst.toExponential(2)}`,
      );
      assert.ok(worst <= 1e-5, `${recipe.method}: losses differ by ${worst}`);
    });
  });
}
