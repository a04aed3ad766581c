/**
 * The GRPO learning-curve demo: `deno run -A recipes/grpo_demo.ts [key=value ...]`.
 *
 *  1. The demo's data and phase 1 (recipes/demo.ts): a seeded random tiny Llama learns the
 *     Alpaca format and to copy words (full_finetune_single_device on "Copy the word.").
 *  2. Held-out success on "Shift each letter by one." (greedy, exact match): near 0, it copies.
 *  3. grpo_finetune_single_device with LoRA from that checkpoint, on the shift prompts, with
 *     an exact-match reward alone (no supervised labels): every `eval_every` steps the
 *     held-out success is measured again.
 *  4. grpo_curve.svg (mean reward per step and held-out success) and grpo_summary.json.
 */
import "../src/components.ts";
import { join } from "node:path";
import { stringify } from "yaml";
import { createBackend } from "../src/backend/select.ts";
import { atomicWrite } from "../src/checkpoint/atomic_write.ts";
import { resolveTree } from "../src/config/load.ts";
import { applyOverrides, parseOverrides } from "../src/config/overrides.ts";
import { defaultLaunchOptions } from "../src/config/recipe.ts";
import { resolveConfig } from "../src/config/resolve.ts";
import type { ParamSchema, ResolvedConfig } from "../src/config/schema.ts";
import {
  DEMO_MODEL,
  type DemoModel,
  llama2cCheckpointer,
  modelSection,
  pretrainConfig,
} from "../src/demo/configs.ts";
import { evaluateTask, pct } from "../src/demo/evaluate.ts";
import {
  COPY_TASK,
  type DemoTask,
  SHIFT_TASK,
  splitWords,
  taskRows,
  toJsonl,
} from "../src/demo/tasks.ts";
import { demoTokenizerBytes, demoVocabulary } from "../src/demo/tokenizer.ts";
import { ALPACA_PROMPT_INPUT } from "../src/data/messages.ts";
import { lossCurveSvg } from "../src/training/loss_plot.ts";
import { type FullFinetuneConfig, runFullFinetune } from "./full_finetune_single_device.ts";
import { type GrpoKeys, grpoRecipe } from "./grpo.ts";
import { findRecipe } from "./registry.ts";

/** The demo's keys. */
export const params = {
  output_dir: { type: "string", default: "out/grpo_demo", doc: "where everything goes" },
  seed: { type: "int", default: 0, doc: "seed of data, weights and sampling" },
  pretrain_steps: { type: "int", default: 150, doc: "phase 1 steps (copy)" },
  grpo_steps: { type: "int", default: 60, doc: "GRPO steps" },
  prompts_per_step: { type: "int", default: 8, doc: "prompts per generation round" },
  group_size: { type: "int", default: 16, doc: "completions per prompt" },
  temperature: { type: "float", default: 1.0, doc: "sampling temperature" },
  lr: { type: "float", default: 3e-3, doc: "GRPO learning rate" },
  pretrain_lr: { type: "float", default: 3e-3, doc: "phase 1 learning rate" },
  lora_rank: { type: "int", default: 16, doc: "LoRA rank" },
  held_out: { type: "int", default: 50, doc: "held-out words" },
  min_word_len: { type: "int", default: 4, doc: "fewest letters of a word" },
  max_word_len: { type: "int", default: 4, doc: "most letters of a word" },
  eval_every: { type: "int", default: 10, doc: "held-out success every n steps" },
  task: {
    type: "string",
    default: "shift",
    choices: ["shift", "first_letter"],
    doc: "shift: Shift each letter by one; first_letter: Write the first letter of the word",
  },
} satisfies ParamSchema;

type Cfg = ResolvedConfig<typeof params>;

/** A task the copy model can stumble on by sampling: stop after the first letter. */
const FIRST_LETTER_TASK: DemoTask = {
  instruction: "Write the first letter of the word.",
  apply: (w) => w.slice(0, 1),
};

/** Run the demo; returns the held-out success before and after. */
export async function runGrpoDemo(cfg: Cfg, say: (s: string) => void = console.log) {
  const t0 = performance.now();
  if (Deno.env.get("OPENBLAS_NUM_THREADS") === undefined) Deno.env.set("OPENBLAS_NUM_THREADS", "1");
  const out = cfg.output_dir, dataDir = join(out, "data");
  Deno.mkdirSync(dataDir, { recursive: true });
  const write = (name: string, text: string) =>
    atomicWrite(join(out, name), new TextEncoder().encode(text));
  // ---- 1. data and the copy model (the demo's phase 1) ----
  const TASK = cfg.task === "shift" ? SHIFT_TASK : FIRST_LETTER_TASK;
  const instructions = [COPY_TASK.instruction, TASK.instruction];
  atomicWrite(join(dataDir, "tokenizer.bin"), demoTokenizerBytes(instructions));
  const words = splitWords({
    seed: cfg.seed,
    pretrain: cfg.pretrain_steps * 32,
    finetune: cfg.grpo_steps * cfg.prompts_per_step,
    heldOut: cfg.held_out,
    minLen: cfg.min_word_len,
    maxLen: cfg.max_word_len,
  });
  write("data/pretrain.jsonl", toJsonl(taskRows(COPY_TASK, words.pretrain)));
  const prompts = words.finetune.map((w) => ({ prompt: w, answer: TASK.apply(w) }));
  write("data/grpo_prompts.jsonl", prompts.map((r) => JSON.stringify(r)).join("\n") + "\n");
  const model: DemoModel = { ...DEMO_MODEL, vocabSize: demoVocabulary(instructions).length };
  const launch = defaultLaunchOptions();
  const preTree = pretrainConfig({
    outputDir: out,
    seed: cfg.seed,
    model,
    batchSize: 32,
    steps: cfg.pretrain_steps,
    lr: cfg.pretrain_lr,
  });
  say(`phase 1: copy model, ${cfg.pretrain_steps} steps of full fine-tuning on "Copy the word."`);
  const pre = await runFullFinetune(
    resolveTree(findRecipe("full_finetune_single_device", launch), preTree) as FullFinetuneConfig,
    launch,
    { quiet: true },
  );
  if (!pre.checkpointDir) throw new Error("phase 1 saved no checkpoint");
  const backend = await createBackend("cpu");
  const copy = evaluateTask(pre.model, backend, pre.tokenizer, COPY_TASK, words.heldOut);
  const before = evaluateTask(pre.model, backend, pre.tokenizer, TASK, words.heldOut);
  pre.model.free();
  say(
    `  held-out copy ${pct(copy.accuracy)}; held-out "${TASK.instruction}" ${pct(before.accuracy)}`,
  );

  // ---- 2. GRPO with an exact-match reward ----
  const template = ALPACA_PROMPT_INPUT.replace("{instruction}", TASK.instruction)
    .replace("{input}", "{prompt}");
  const grpoTree: Record<string, unknown> = {
    output_dir: join(out, "grpo"),
    model: {
      _component_: "tune.models.lora_llama",
      ...modelSection(model),
      lora_attn_modules: ["q_proj", "k_proj", "v_proj", "output_proj"],
      apply_lora_to_mlp: true,
      apply_lora_to_output: true,
      lora_rank: cfg.lora_rank,
      lora_alpha: 2 * cfg.lora_rank,
      lora_dropout: 0.0,
    },
    model_init: "checkpoint",
    tokenizer: {
      _component_: "tune.tokenizers.load",
      path: join(dataDir, "tokenizer.bin"),
      max_seq_len: model.maxSeqLen,
    },
    checkpointer: llama2cCheckpointer(pre.checkpointDir),
    dataset: {
      _component_: "tune.datasets.prompt_answer_dataset",
      source: "json",
      data_files: join(dataDir, "grpo_prompts.jsonl"),
      prompt_template: template,
    },
    reward_fns: [{ _component_: "tune.rewards.exact_match" }],
    seed: cfg.seed,
    shuffle: true,
    batch_size: cfg.prompts_per_step,
    grpo_samples: cfg.group_size,
    forward_batch_size: cfg.prompts_per_step * cfg.group_size,
    max_generated_tokens: cfg.max_word_len + 1,
    temperature: cfg.temperature,
    ppo_epochs: 1,
    loss: { _component_: "tune.rlhf.GRPOLoss", loss_type: "grpo", beta: 0.0 },
    optimizer: { _component_: "torch.optim.AdamW", lr: cfg.lr, weight_decay: 0.0 },
    epochs: 1,
    max_steps_per_epoch: cfg.grpo_steps,
    clip_grad_norm: 1.0,
    device: "cpu",
    dtype: "fp32",
    enable_activation_checkpointing: false,
    log_every_n_steps: 1,
    log_completions_every_n_steps: cfg.eval_every,
  };
  write(
    "grpo.yaml",
    `# deno task tune run grpo_finetune_single_device --config ${join(out, "grpo.yaml")}\n` +
      `# Written by recipes/grpo_demo.ts (phase 2), rerunnable as is.\n\n${stringify(grpoTree)}`,
  );
  const grpoCfg = resolveTree(
    findRecipe("grpo_finetune_single_device", launch),
    grpoTree,
  ) as unknown as GrpoKeys;
  const curve: { step: number; loss: number; val_loss?: number }[] = [];
  const evals: { step: number; success: number; seconds: number }[] = [
    { step: 0, success: before.accuracy, seconds: 0 },
  ];
  const tg = performance.now();
  const recipe = grpoRecipe(grpoCfg, {
    name: "grpo_finetune_single_device",
    launch,
    hooks: {
      quiet: true,
      onStep: (m) => {
        const point: { step: number; loss: number; val_loss?: number } = {
          step: m.step,
          loss: m.reward as number,
        };
        if (m.step % cfg.eval_every === 0 || m.step === cfg.grpo_steps) {
          const a = evaluateTask(recipe.model, backend, recipe.tokenizer, TASK, words.heldOut);
          point.val_loss = a.accuracy;
          evals.push({
            step: m.step,
            success: a.accuracy,
            seconds: (performance.now() - tg) / 1000,
          });
          say(
            `  step ${String(m.step).padStart(3)}  reward ${(m.reward as number).toFixed(3)}  ` +
              `held-out success ${pct(a.accuracy)}  (${evals.at(-1)!.seconds.toFixed(0)} s)`,
          );
        }
        curve.push(point);
      },
    },
  });
  say(`phase 2: GRPO, exact-match reward only, ${cfg.grpo_steps} steps`);
  await recipe.setup();
  await recipe.train();
  await recipe.cleanup();
  const after = evaluateTask(recipe.model, backend, recipe.tokenizer, TASK, words.heldOut);
  recipe.model.free();
  const svg = lossCurveSvg(curve, "GRPO: mean reward (exact match) and held-out success")
    .replaceAll(">loss</text>", ">reward / success</text>")
    .replaceAll("training loss", "mean reward of the sampled completions")
    .replaceAll(">validation loss<", ">held-out success (greedy)<");
  write("grpo_curve.svg", svg);
  const summary = {
    seed: cfg.seed,
    task: TASK.instruction,
    copyAccuracy: copy.accuracy,
    successBefore: before.accuracy,
    successAfter: after.accuracy,
    grpoSeconds: (performance.now() - tg) / 1000,
    totalSeconds: (performance.now() - t0) / 1000,
    evals,
    examples: after.results.slice(0, 6),
  };
  write("grpo_summary.json", JSON.stringify(summary, null, 2) + "\n");
  say(
    `held-out "${TASK.instruction}": ${pct(before.accuracy)} before GRPO -> ` +
      `${pct(after.accuracy)} after (${summary.grpoSeconds.toFixed(0)} s of GRPO)`,
  );
  return summary;
}

if (import.meta.main) {
  const tree: Record<string, unknown> = {};
  applyOverrides(tree, parseOverrides(Deno.args));
  await runGrpoDemo(resolveConfig(params, tree, "grpo_demo") as Cfg);
}
