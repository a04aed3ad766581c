/**
 * The embedded demo (`deno task demo`, `tune demo [key=value ...]`): everything from this
 * repository, on the CPU, in a minute or two.
 *
 *  1. Data: a llama2.c tokenizer.bin (letters + the Alpaca prompt's fixed phrases) and
 *     Alpaca JSONL for two tasks on random words: A "Copy the word." and B "Shift each
 *     letter by one." (Caesar shift), with held-out words never seen in training.
 *  2. Pretraining: full_finetune_single_device from a seeded random tiny Llama on task A,
 *     so the base model learns the prompt format and to copy letters.
 *  3. Held-out accuracy of the base model on task B (near 0: it copies).
 *  4. LoRA: lora_finetune_single_device on task B from the pretrained weights
 *     (train_on_input false), writing the PEFT adapter and merged llama2.c weights.
 *  5. Held-out accuracy after LoRA, example generations, demo_summary.json.
 *
 * Both training runs are the real recipes (runFullFinetune / runLoraFinetune) on configs
 * resolved by the same code as `tune run`; their configs are written next to the outputs so
 * each phase can be rerun with `tune run ... --config <output_dir>/<phase>.yaml`.
 */
import "../src/components.ts";
import { join } from "node:path";
import { stringify } from "yaml";
import { createBackend } from "../src/backend/select.ts";
import { atomicWrite } from "../src/checkpoint/atomic_write.ts";
import { defaultLaunchOptions } from "../src/config/recipe.ts";
import { applyOverrides, parseOverrides } from "../src/config/overrides.ts";
import { resolveTree } from "../src/config/load.ts";
import { resolveConfig } from "../src/config/resolve.ts";
import type { ParamSchema, ResolvedConfig } from "../src/config/schema.ts";
import {
  DEMO_MODEL,
  type DemoModel,
  loraConfig,
  type PhaseOptions,
  pretrainConfig,
} from "../src/demo/configs.ts";
import { evaluateTask, pct, type TaskAccuracy } from "../src/demo/evaluate.ts";
import { COPY_TASK, SHIFT_TASK, splitWords, taskRows, toJsonl } from "../src/demo/tasks.ts";
import { demoTokenizerBytes, demoVocabulary } from "../src/demo/tokenizer.ts";
import type { StepMetrics } from "../src/training/run_log.ts";
import { findRecipe } from "./registry.ts";
import { type FullFinetuneConfig, runFullFinetune } from "./full_finetune_single_device.ts";
import { type LoraFinetuneConfig, runLoraFinetune } from "./lora_finetune_single_device.ts";

/** The demo's command-line keys (`tune demo key=value ...`). */
export const params = {
  output_dir: { type: "string", default: "out/demo", doc: "where data, checkpoints, metrics go" },
  seed: { type: "int", default: 0, doc: "seed of the data, the initial weights and shuffling" },
  pretrain_steps: { type: "int", default: 150, doc: "optimizer steps of phase 1 (task A)" },
  lora_steps: { type: "int", default: 80, doc: "optimizer steps of phase 2 (LoRA, task B)" },
  batch_size: { type: "int", default: 32, doc: "examples per step" },
  lr: { type: "float", default: 3e-3, doc: "peak learning rate of both phases" },
  lora_rank: { type: "int", default: 16, doc: "LoRA rank" },
  lora_alpha: { type: "float", default: 32, doc: "LoRA alpha" },
  held_out: { type: "int", default: 50, doc: "held-out words for the accuracy" },
  min_word_len: { type: "int", default: 4, doc: "fewest letters of a word" },
  max_word_len: { type: "int", default: 4, doc: "most letters of a word" },
  examples: { type: "int", default: 6, doc: "example generations to print" },
} satisfies ParamSchema;

/** The demo's resolved options. */
export type DemoConfig = ResolvedConfig<typeof params>;

/** What the demo measured (also written to demo_summary.json). */
export interface DemoSummary {
  outputDir: string;
  seed: number;
  pretrain: { steps: number; firstLoss: number; lastLoss: number; copyAccuracy: number };
  lora: { steps: number; firstLoss: number; lastLoss: number };
  accuracyBefore: number;
  accuracyAfter: number;
  heldOut: number;
  files: Record<string, string>;
  seconds: number;
}

/** Resolve `key=value` arguments against the demo's params. */
export function demoConfig(args: readonly string[]): DemoConfig {
  const tree: Record<string, unknown> = {};
  applyOverrides(tree, parseOverrides(args));
  return resolveConfig(params, tree, "demo") as DemoConfig;
}

function lossPrinter(label: string, total: number, say: (s: string) => void) {
  const every = Math.max(1, Math.round(total / 8));
  return (m: StepMetrics) => {
    if (m.step === 1 || m.step % every === 0 || m.step === total) {
      say(`  ${label} step ${String(m.step).padStart(4)}/${total}  loss ${m.loss.toFixed(4)}`);
    }
  };
}

function showExamples(acc: TaskAccuracy, n: number, say: (s: string) => void): void {
  for (const r of acc.results.slice(0, n)) {
    say(
      `    ${r.input} -> ${JSON.stringify(r.generated).padEnd(12)} ${
        r.correct ? "ok" : `(want ${r.expected})`
      }`,
    );
  }
}

/** Run the demo with already-resolved options; returns what it measured. */
export async function runDemo(cfg: DemoConfig, say: (s: string) => void = console.log): Promise<
  DemoSummary
> {
  const t0 = performance.now();
  // The demo's products are tiny: one BLAS thread beats waking a second (unless set by the user).
  if (Deno.env.get("OPENBLAS_NUM_THREADS") === undefined) {
    Deno.env.set("OPENBLAS_NUM_THREADS", "1");
  }
  const out = cfg.output_dir;
  const dataDir = join(out, "data");
  Deno.mkdirSync(dataDir, { recursive: true });

  // ---- 1. data ----
  const instructions = [COPY_TASK.instruction, SHIFT_TASK.instruction];
  const tokenizerPath = join(dataDir, "tokenizer.bin");
  atomicWrite(tokenizerPath, demoTokenizerBytes(instructions));
  const words = splitWords({
    seed: cfg.seed,
    // one epoch of distinct words per phase: no example is seen twice
    pretrain: cfg.pretrain_steps * cfg.batch_size,
    finetune: cfg.lora_steps * cfg.batch_size,
    heldOut: cfg.held_out,
    minLen: cfg.min_word_len,
    maxLen: cfg.max_word_len,
  });
  const write = (name: string, text: string) => {
    atomicWrite(join(dataDir, name), new TextEncoder().encode(text));
  };
  write("pretrain.jsonl", toJsonl(taskRows(COPY_TASK, words.pretrain)));
  write("finetune.jsonl", toJsonl(taskRows(SHIFT_TASK, words.finetune)));
  write("held_out.jsonl", toJsonl(taskRows(SHIFT_TASK, words.heldOut)));
  const model: DemoModel = { ...DEMO_MODEL, vocabSize: demoVocabulary(instructions).length };
  say(
    `data: ${words.pretrain.length} "${COPY_TASK.instruction}" rows, ${words.finetune.length} ` +
      `"${SHIFT_TASK.instruction}" rows, ${words.heldOut.length} held-out words; ` +
      `tokenizer ${tokenizerPath} (${model.vocabSize} pieces)`,
  );

  const launch = defaultLaunchOptions();
  const phase = (steps: number): PhaseOptions => ({
    outputDir: out,
    seed: cfg.seed,
    model,
    batchSize: cfg.batch_size,
    steps,
    lr: cfg.lr,
  });
  const saveConfig = (name: string, recipe: string, tree: Record<string, unknown>) => {
    const path = join(out, name);
    const header = `# deno task tune run ${recipe} --config ${path}\n` +
      `# Written by tune demo: phase ${
        name === "pretrain.yaml" ? 1 : 2
      } of the demo, rerunnable as is.\n\n`;
    atomicWrite(path, new TextEncoder().encode(header + stringify(tree)));
  };

  // ---- 2. pretraining (full fine-tune from a seeded random init) on task A ----
  const fullRecipe = findRecipe("full_finetune_single_device", launch);
  const preTree = pretrainConfig(phase(cfg.pretrain_steps));
  saveConfig("pretrain.yaml", fullRecipe.name, preTree);
  say(
    `\nphase 1: full_finetune_single_device, seeded random Llama (dim ${model.dim}, ` +
      `${model.layers} layers) on "${COPY_TASK.instruction}"`,
  );
  const pre = await runFullFinetune(
    resolveTree(fullRecipe, preTree) as FullFinetuneConfig,
    launch,
    { quiet: true, onStep: lossPrinter("pretrain", cfg.pretrain_steps, say) },
  );
  if (!pre.checkpointDir) throw new Error("phase 1 saved no checkpoint");
  const backend = await createBackend("cpu");
  const copy = evaluateTask(pre.model, backend, pre.tokenizer, COPY_TASK, words.heldOut);
  const before = evaluateTask(pre.model, backend, pre.tokenizer, SHIFT_TASK, words.heldOut);
  pre.model.free();
  say(`  held-out "${COPY_TASK.instruction}": ${pct(copy.accuracy)}`);
  say(`\nbefore LoRA, held-out "${SHIFT_TASK.instruction}": ${pct(before.accuracy)} exact match`);
  showExamples(before, cfg.examples, say);

  // ---- 3. LoRA on task B ----
  const loraRecipe = findRecipe("lora_finetune_single_device", launch);
  const loraTree = loraConfig(
    phase(cfg.lora_steps),
    { rank: cfg.lora_rank, alpha: cfg.lora_alpha },
    pre.checkpointDir,
  );
  saveConfig("lora.yaml", loraRecipe.name, loraTree);
  say(
    `\nphase 2: lora_finetune_single_device (rank ${cfg.lora_rank}) on "${SHIFT_TASK.instruction}"`,
  );
  const ft = await runLoraFinetune(
    resolveTree(loraRecipe, loraTree) as LoraFinetuneConfig,
    launch,
    { quiet: true, onStep: lossPrinter("lora", cfg.lora_steps, say) },
  );
  if (!ft.checkpointDir) throw new Error("phase 2 saved no checkpoint");
  const after = evaluateTask(ft.model, backend, ft.tokenizer, SHIFT_TASK, words.heldOut);
  ft.model.free();
  say(`\nafter LoRA, held-out "${SHIFT_TASK.instruction}": ${pct(after.accuracy)} exact match`);
  showExamples(after, cfg.examples, say);

  // ---- 4. summary ----
  const first = (s: StepMetrics[]) => s[0]?.loss ?? NaN;
  const last = (s: StepMetrics[]) => s[s.length - 1]?.loss ?? NaN;
  const summary: DemoSummary = {
    outputDir: out,
    seed: cfg.seed,
    pretrain: {
      steps: pre.steps.length,
      firstLoss: first(pre.steps),
      lastLoss: last(pre.steps),
      copyAccuracy: copy.accuracy,
    },
    lora: { steps: ft.steps.length, firstLoss: first(ft.steps), lastLoss: last(ft.steps) },
    accuracyBefore: before.accuracy,
    accuracyAfter: after.accuracy,
    heldOut: words.heldOut.length,
    files: {
      tokenizer: tokenizerPath,
      base_model: join(pre.checkpointDir, "model.bin"),
      adapter: join(ft.checkpointDir, "adapter_model.safetensors"),
      merged_model: join(ft.checkpointDir, "model.bin"),
      pretrain_metrics: pre.metricsPath,
      pretrain_loss_curve: pre.lossCurvePath,
      lora_metrics: ft.metricsPath,
      lora_loss_curve: ft.lossCurvePath,
    },
    seconds: (performance.now() - t0) / 1000,
  };
  const summaryPath = join(out, "demo_summary.json");
  atomicWrite(summaryPath, new TextEncoder().encode(JSON.stringify(summary, null, 2) + "\n"));
  say(
    `\nheld-out accuracy on "${SHIFT_TASK.instruction}" (${words.heldOut.length} unseen words): ` +
      `${pct(before.accuracy)} before LoRA -> ${pct(after.accuracy)} after`,
  );
  say(`\nwrote (${summary.seconds.toFixed(0)} s):`);
  for (const [k, v] of Object.entries(summary.files)) say(`  ${k.padEnd(20)} ${v}`);
  say(`  ${"summary".padEnd(20)} ${summaryPath}`);
  say(
    `\ntry the merged model: deno task tune run generate --config llama2c/generate ` +
      `checkpointer.checkpoint_dir=${ft.checkpointDir} tokenizer.path=${tokenizerPath} ` +
      `instruct_template=alpaca 'prompt={instruction: "${SHIFT_TASK.instruction}", input: tune}' ` +
      `max_new_tokens=8`,
  );
  return summary;
}

/** `tune demo [key=value ...]`. */
export async function main(args: string[]): Promise<void> {
  await runDemo(demoConfig(args));
}
