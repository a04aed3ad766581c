/**
 * The single-device recipes (lora_finetune_single_device, full_finetune_single_device, eval)
 * run as the real CLI in a subprocess on the tiny configs: pinned losses (1e-4 abs, the
 * same under TUNE_CPU_MATMUL=ts), gradient accumulation equal to the big batch, bitwise
 * resume, the NaN stop, and LoRA on the real aidreams260K model lowering held-out loss.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  assertLosses,
  exists,
  readMetrics,
  ROOT,
  runOk,
  timeless,
  tune,
  withTmp,
} from "./_recipe_helpers.ts";

const SHARED = new URL("./data/models/aidreams260K/", import.meta.url);

const SHORT = ["epochs=2", "max_steps_per_epoch=3"];

// Losses of the tiny configs, 2 epochs of 3 steps, seed 0 (recorded from this implementation
// after checking they start at ~ln(320) = 5.77 and fall).
const LORA_LOSSES = [5.773240, 5.756729, 5.700194, 5.584325, 5.415070, 5.312680];
const FULL_LOSSES = [5.773240, 5.756729, 5.564887, 5.353028, 5.147953, 5.047896];

Deno.test("lora_finetune_single_device pins its losses and writes adapter, merged model, metrics and loss curve", async () => {
  await withTmp(async (dir) => {
    const out = join(dir, "lora");
    const r = await runOk(
      "lora_finetune_single_device",
      "--config",
      "tiny/lora_single_device",
      `output_dir=${out}`,
      ...SHORT,
    );
    const m = readMetrics(out);
    assertLosses("lora", m.map((x) => x.loss), LORA_LOSSES, 1e-4);
    for (const x of m) {
      for (const k of ["step", "epoch", "loss", "lr", "grad_norm", "tokens", "tokens_per_s"]) {
        assert.equal(typeof x[k], "number", `metrics.jsonl has ${k}`);
      }
    }
    assert.deepEqual(m.map((x) => x.step), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(m.map((x) => x.epoch), [0, 0, 0, 1, 1, 1]);
    for (const e of ["epoch_0", "epoch_1"]) {
      for (
        const f of [
          "adapter_model.safetensors",
          "adapter_config.json",
          "model.safetensors",
          "config.json",
        ]
      ) {
        assert.ok(exists(join(out, e, f)), `${e}/${f} written`);
      }
    }
    assert.match(Deno.readTextFileSync(join(out, "loss_curve.svg")), /^<svg [^]*<path d="M/);
    assert.match(r.stdout, /lora_finetune_single_device: 6 steps, \d+ tokens in/);
    assert.match(r.stdout, /loss 5\.\d+ \(step 1\) -> \d\.\d+ \(step 6\)/);
    assert.match(r.stderr, /\] 6\/6 loss=\d\.\d+ lr=\S+ tok\/s=\d+/);
  });
});

Deno.test("full_finetune_single_device pins its losses and writes the model each epoch", async () => {
  await withTmp(async (dir) => {
    const out = join(dir, "full");
    await runOk(
      "full_finetune_single_device",
      "--config",
      "tiny/full_single_device",
      `output_dir=${out}`,
      ...SHORT,
    );
    assertLosses("full", readMetrics(out).map((x) => x.loss), FULL_LOSSES, 1e-4);
    for (const e of ["epoch_0", "epoch_1"]) {
      assert.ok(exists(join(out, e, "model.safetensors")), `${e}/model.safetensors written`);
      assert.ok(!exists(join(out, e, "adapter_model.safetensors")), "no adapter in a full run");
    }
  });
});

Deno.test("full_finetune_single_device gives the same losses with a batch split into gradient-accumulation steps", async () => {
  await withTmp(async (dir) => {
    const big = join(dir, "big"), split = join(dir, "split");
    const cfg = ["full_finetune_single_device", "--config", "tiny/full_single_device", ...SHORT];
    await runOk(...cfg, `output_dir=${big}`, "batch_size=4");
    await runOk(...cfg, `output_dir=${split}`, "batch_size=2", "gradient_accumulation_steps=2");
    const a = readMetrics(big), b = readMetrics(split);
    // fp32 sums in a different order: 1e-5 (the N-step tolerance is 1e-4)
    assertLosses("batch 4 vs 2x2", b.map((x) => x.loss), a.map((x) => x.loss), 1e-5);
    assert.deepEqual(b.map((x) => x.tokens), a.map((x) => x.tokens), "same tokens per step");
  });
});

for (
  const [recipe, config, ...extra] of [
    ["lora_finetune_single_device", "tiny/lora_single_device"],
    // dropout masks are keyed by the model's micro-step, which the recipe state restores
    ["lora_finetune_single_device", "tiny/lora_single_device", "model.lora_dropout=0.1"],
    ["full_finetune_single_device", "tiny/full_single_device"],
  ]
) {
  Deno.test(
    `${recipe} resumed from a mid-epoch checkpoint reproduces the remaining steps bitwise ${
      extra.join(" ")
    }`,
    async () => {
      await withTmp(async (dir) => {
        const whole = join(dir, "whole"), parts = join(dir, "parts");
        const cfg = [recipe, "--config", config, ...SHORT, ...extra];
        await runOk(...cfg, `output_dir=${whole}`);
        // the first part stops after step 4 (mid epoch 1) and saves step_4/ + recipe_state/
        await runOk(...cfg, `output_dir=${parts}`, "stop_after_steps=4");
        assert.ok(exists(join(parts, "step_4")), "step_4/ written");
        assert.equal(readMetrics(parts).length, 4);
        await runOk(...cfg, `output_dir=${parts}`, "resume_from_checkpoint=True");
        const a = readMetrics(whole).map(timeless), b = readMetrics(parts).map(timeless);
        console.log(`${recipe} ${extra.join(" ")}: resumed steps 5-6 ${b.slice(4).join(" ")}`);
        assert.deepEqual(b, a, "metrics.jsonl of the resumed run equals the uninterrupted run");
      });
    },
  );
}

Deno.test("full_finetune_single_device stops with one line on a NaN loss and keeps the last good checkpoint", async () => {
  await withTmp(async (dir) => {
    const out = join(dir, "nan");
    const r = await tune(
      "run",
      "full_finetune_single_device",
      "--config",
      "tiny/full_single_device",
      `output_dir=${out}`,
      ...SHORT,
      "optimizer.lr=1e30",
      "~lr_scheduler",
      "~clip_grad_norm",
      "save_every_n_steps=1",
    );
    assert.equal(r.code, 1, r.stderr);
    const line = r.stderr.trim().split("\n").at(-1)!;
    console.log(`NaN stop: ${line}`);
    const m =
      /^tune: loss is (NaN|Infinity|-Infinity) at step (\d+): training diverged and was stopped \(the last good checkpoint is (\S+)\)/
        .exec(line);
    assert.ok(m, `one-line divergence error, got: ${line}`);
    const step = Number(m[2]);
    assert.ok(step >= 2, "the first step (finite weights) is fine");
    assert.equal(m[3], join(out, `step_${step - 1}`));
    assert.ok(exists(join(m[3], "model.safetensors")), "the last good checkpoint is on disk");
    assert.ok(!exists(join(out, `step_${step}`)), "nothing saved after the bad step");
    const state = JSON.parse(Deno.readTextFileSync(join(out, "recipe_state", "recipe_state.json")));
    assert.equal(state.step, step - 1, "recipe state is that of the last good step");
    assert.ok(!r.stderr.includes("    at "), "no stack trace");
  });
});

Deno.test("lora_finetune_single_device rejects a tokenizer larger than the model's vocabulary in one line", async () => {
  const r = await tune(
    "run",
    "lora_finetune_single_device",
    "--config",
    "tiny/lora_single_device",
    "output_dir=/nonexistent/never_written",
    "model.vocab_size=100",
  );
  assert.equal(r.code, 1);
  assert.match(
    r.stderr.trim(),
    /^tune: running .*\ntune: tokenizer and model vocab mismatch: tokenizer \S+ has 320 tokens but the model's vocab_size is 100; use the tokenizer that came with the checkpoint$/,
  );
});

const AIDREAMS_MODEL = `
  vocab_size: 512
  num_layers: 4
  num_heads: 4
  num_kv_heads: 4
  embed_dim: 64
  intermediate_dim: 172
  max_seq_len: 128
  norm_eps: 1e-5
  tie_word_embeddings: true
  rope_layout: interleaved`;
const AIDREAMS_LORA = `
  lora_attn_modules: [q_proj, k_proj, v_proj, output_proj]
  apply_lora_to_mlp: true
  lora_rank: 8
  lora_alpha: 16`;

Deno.test("lora_finetune_single_device on aidreams260K lowers held-out loss, as the eval recipe measures it", async () => {
  await withTmp(async (dir) => {
    const ad = SHARED.pathname;
    await Deno.writeTextFile(
      join(dir, "train.txt"),
      [
        "Pip the little robot painted the sky purple every morning.",
        "Pip had a purple brush and a big bucket of purple paint.",
        "Every morning Pip climbed the tall hill to paint the sky.",
        "The birds sang when Pip painted the sky purple.",
        "Pip's friend Zed the owl watched the purple sky from his tree.",
        "Zed said, Pip, your purple sky is the prettiest sky of all.",
        "Pip smiled and painted one more purple cloud for Zed.",
        "At night Pip washed the purple brush in the river.",
      ].join("\n") + "\n",
    );
    await Deno.writeTextFile(
      join(dir, "heldout.txt"),
      [
        "Pip the little robot climbed the hill with his purple brush.",
        "Zed the owl sang to Pip from the tall tree.",
        "Every morning the sky was purple because Pip painted it.",
        "Pip painted a purple cloud and Zed smiled.",
      ].join("\n") + "\n",
    );
    const common = (model: string, extra: string, data: string) => `
output_dir: ${dir}/out
model:
  _component_: ${model}${AIDREAMS_MODEL}${extra}
tokenizer:
  _component_: tune.tokenizers.load
  path: ${ad}tokenizer.bin
  max_seq_len: 128
checkpointer:
  _component_: tune.training.Llama2cCheckpointer
  checkpoint_dir: ${ad}
  checkpoint_files: [model.bin]
  output_dir: \${output_dir}
  model_type: LLAMA2C
dataset:
  _component_: torchtune.datasets.text_completion_dataset
  source: text
  data_files: ${dir}/${data}
  sample_by: line
`;
    await Deno.writeTextFile(
      join(dir, "train.yaml"),
      common("tune.models.lora_llama", AIDREAMS_LORA, "train.txt") + `
seed: 0
batch_size: 4
epochs: 10
optimizer:
  _component_: torch.optim.AdamW
  lr: 1e-2
  weight_decay: 0.0
clip_grad_norm: 1.0
`,
    );
    await Deno.writeTextFile(
      join(dir, "eval_base.yaml"),
      common("tune.models.llama", "", "heldout.txt") + "batch_size: 4\n",
    );
    await Deno.writeTextFile(
      join(dir, "eval_lora.yaml"),
      common("tune.models.lora_llama", AIDREAMS_LORA, "heldout.txt").replace(
        "  model_type: LLAMA2C",
        `  model_type: LLAMA2C\n  adapter_checkpoint: ${dir}/out/epoch_9`,
      ) + "batch_size: 4\n",
    );
    const evalLoss = async (config: string, out: string) => {
      const r = await runOk("eval", "--config", join(dir, config), `output_dir=${join(dir, out)}`);
      const m = /eval: loss (\S+) perplexity (\S+) over (\d+) tokens/.exec(r.stdout);
      assert.ok(m, `eval prints its result: ${r.stdout}`);
      const json = JSON.parse(Deno.readTextFileSync(join(dir, out, "eval_results.json")));
      assert.ok(Math.abs(json.perplexity - Math.exp(json.loss)) < 1e-9 * json.perplexity);
      assert.equal(json.tokens, Number(m[3]));
      return json.loss as number;
    };
    const before = await evalLoss("eval_base.yaml", "eval_before");
    const r = await runOk("lora_finetune_single_device", "--config", join(dir, "train.yaml"));
    assert.ok(exists(join(dir, "out", "epoch_9", "adapter_model.safetensors")));
    assert.ok(
      exists(join(dir, "out", "epoch_9", "model.bin")),
      "merged weights in llama2.c format",
    );
    const after = await evalLoss("eval_lora.yaml", "eval_after");
    console.log(
      `aidreams260K held-out loss: before ${before.toFixed(4)} (ppl ${
        Math.exp(before).toFixed(2)
      }), ` +
        `after LoRA ${after.toFixed(4)} (ppl ${Math.exp(after).toFixed(2)}); ${
          r.stdout.split("\n").find((l) => l.startsWith("loss "))
        }`,
    );
    assert.ok(after < before - 1, `held-out loss falls by more than 1 nat: ${before} -> ${after}`);
    // The merged llama2.c weights score what base + adapter scores (fp32 forward: 1e-5).
    const mergedRun = await runOk(
      "eval",
      "--config",
      join(dir, "eval_base.yaml"),
      `output_dir=${join(dir, "eval_merged")}`,
      `checkpointer.checkpoint_dir=${join(dir, "out", "epoch_9")}`,
    );
    const merged = JSON.parse(
      Deno.readTextFileSync(join(dir, "eval_merged", "eval_results.json")),
    ).loss as number;
    console.log(
      `merged model.bin held-out loss ${merged.toFixed(6)} vs base + adapter ${after.toFixed(6)}`,
    );
    assert.ok(Math.abs(merged - after) < 1e-5, mergedRun.stdout);
  });
});

Deno.test("runLoraFinetune() runs in-process with hooks and returns the trained model, then runEval() scores it", async () => {
  const { loadRecipeConfig } = await import("../src/config/load.ts");
  const { parseOverrides } = await import("../src/config/overrides.ts");
  const { defaultLaunchOptions } = await import("../src/config/recipe.ts");
  const lora = await import("../recipes/lora_finetune_single_device.ts");
  const evaluate = await import("../recipes/eval.ts");
  await withTmp(async (dir) => {
    // the tiny configs' data paths are relative to the repo root: make them absolute
    const paths = [
      `tokenizer.path=${new URL("tests/fixtures/tokenizer_sp_small.model", ROOT).pathname}`,
      `dataset.data_files=${new URL("tests/fixtures/tiny/stories.txt", ROOT).pathname}`,
    ];
    {
      const { config } = loadRecipeConfig(
        { name: "lora_finetune_single_device", params: lora.params, keyAliases: lora.keyAliases },
        "tiny/lora_single_device",
        parseOverrides([`output_dir=${dir}/lora`, ...SHORT, ...paths]),
      );
      const seen: number[] = [];
      const saved: string[] = [];
      const r = await lora.runLoraFinetune(config, defaultLaunchOptions(), {
        quiet: true,
        onStep: (m) => seen.push(m.loss),
        onSave: (d) => saved.push(d),
      });
      assertLosses("in-process lora", seen, LORA_LOSSES, 1e-4);
      assert.deepEqual(r.steps.map((m) => m.loss), seen);
      assert.deepEqual(saved, [join(dir, "lora", "epoch_0"), join(dir, "lora", "epoch_1")]);
      assert.equal(r.checkpointDir, join(dir, "lora", "epoch_1"));
      assert.equal(r.metricsPath, join(dir, "lora", "metrics.jsonl"));
      assert.ok(exists(r.lossCurvePath));
      assert.equal(r.seed, 0);
      assert.equal(r.tokenizer.vocabSize, 320);
      assert.ok(r.model.spec.lora, "the returned model carries its adapters");
      r.model.free();

      const { config: ecfg } = loadRecipeConfig(
        { name: "eval", params: evaluate.params, keyAliases: evaluate.keyAliases },
        "tiny/eval",
        parseOverrides([
          `output_dir=${dir}/eval`,
          "model._component_=tune.models.lora_llama",
          "model.lora_attn_modules=[q_proj,v_proj,output_proj]",
          "model.apply_lora_to_mlp=True",
          "model.apply_lora_to_output=True",
          "model.lora_rank=8",
          "model.lora_alpha=16",
          `checkpointer.adapter_checkpoint=${r.checkpointDir}`,
          ...paths,
        ]),
      );
      const e = await evaluate.runEval(ecfg, defaultLaunchOptions(), { quiet: true });
      console.log(
        `tiny LoRA after 6 steps: eval loss ${e.loss.toFixed(4)} over ${e.tokens} tokens`,
      );
      // every sample once; the last training losses were ~5.3 on the same text
      assert.equal(e.samples, 48);
      assert.ok(e.loss < LORA_LOSSES[0] - 0.3 && e.loss > 3, `eval loss ${e.loss}`);
    }
  });
});

Deno.test("eval scores every sample once: the loss does not depend on the batch size (last batch padded, not dropped)", async () => {
  await withTmp(async (dir) => {
    const results = [];
    for (const bs of [8, 5]) {
      const out = join(dir, `bs${bs}`);
      const r = await runOk(
        "eval",
        "--config",
        "tiny/eval",
        `output_dir=${out}`,
        `batch_size=${bs}`,
      );
      assert.match(
        r.stdout,
        /^eval: loss \d\.\d{4} perplexity \d+\.\d{3} over \d+ tokens \(48 samples of /m,
      );
      results.push(JSON.parse(Deno.readTextFileSync(join(out, "eval_results.json"))));
    }
    console.log(`tiny/eval (seeded random init): ${JSON.stringify(results[0])}`);
    assert.equal(results[1].tokens, results[0].tokens);
    assert.equal(results[1].samples, 48);
    // the random init scores ~ln(320) = 5.77; fp32 sums in another grouping: 1e-6
    assert.ok(Math.abs(results[0].loss - Math.log(320)) < 0.1, `${results[0].loss}`);
    assert.ok(Math.abs(results[1].loss - results[0].loss) < 1e-6);
  });
});
