/**
 * Every recipe `tune` can run, the shipped configs that go with each, and the older
 * torchtune names that still work. This file is the whole list: `tune run` can start
 * nothing else.
 */
import { TuneError } from "../src/errors.ts";
import type { LaunchOptions, RecipeDefinition } from "../src/config/recipe.ts";
import type { ParamSchema } from "../src/config/schema.ts";
import { withRunKeys } from "../src/config/run_keys.ts";
import { didYouMean } from "../src/config/suggest.ts";
import * as loraSingle from "./lora_finetune_single_device.ts";
import * as loraDistributed from "./lora_finetune_distributed.ts";
import * as loraDpo from "./lora_dpo_single_device.ts";
import * as loraDpoDistributed from "./lora_dpo_distributed.ts";
import * as grpoSingle from "./grpo_finetune_single_device.ts";
import * as grpoDistributed from "./grpo_finetune_distributed.ts";
import * as knowledgeDistillation from "./knowledge_distillation_single_device.ts";
import * as knowledgeDistillationDistributed from "./knowledge_distillation_distributed.ts";
import * as fullSingle from "./full_finetune_single_device.ts";
import * as fullDistributed from "./full_finetune_distributed.ts";
import * as generate from "./generate.ts";
import * as evaluate from "./eval.ts";
import * as eleutherEval from "./eleuther_eval.ts";

/** A recipe module's exports (recipes/<name>.ts). */
interface RecipeModule<S extends ParamSchema> {
  params: S;
  keyAliases: Readonly<Record<string, string>>;
  main: RecipeDefinition<S>["main"];
}

function define<S extends ParamSchema>(
  name: string,
  description: string,
  aliases: readonly string[],
  mod: RecipeModule<S>,
): RecipeDefinition {
  return {
    name,
    description,
    aliases,
    params: withRunKeys(mod.params),
    keyAliases: mod.keyAliases,
    // Read `mod.main` at call time so the recipe's current export is the one that runs.
    main: (cfg, launch) => mod.main(cfg as never, launch),
  };
}

/** The recipes, in `tune ls` order. */
export const RECIPES: readonly RecipeDefinition[] = [
  define(
    "full_finetune_single_device",
    "full fine-tuning on one device",
    ["full_finetune"],
    fullSingle,
  ),
  define(
    "full_finetune_distributed",
    "full fine-tuning sharded over processes (FSDP-style)",
    [],
    fullDistributed,
  ),
  define(
    "lora_finetune_single_device",
    "LoRA fine-tuning on one device",
    ["lora_finetune"],
    loraSingle,
  ),
  define(
    "lora_finetune_distributed",
    "LoRA fine-tuning sharded over processes",
    ["lora_finetune_multi_gpu"],
    loraDistributed,
  ),
  define(
    "lora_dpo_single_device",
    "preference fine-tuning (DPO, RSO, SimPO) with LoRA on one device",
    ["lora_dpo"],
    loraDpo,
  ),
  define(
    "lora_dpo_distributed",
    "preference fine-tuning (DPO, RSO, SimPO) with LoRA sharded over processes",
    [],
    loraDpoDistributed,
  ),
  define(
    "grpo_finetune_single_device",
    "online RL with verifiable rewards (GRPO, Dr. GRPO, DAPO) with LoRA on one device",
    ["grpo"],
    grpoSingle,
  ),
  define(
    "grpo_finetune_distributed",
    "online RL with verifiable rewards (GRPO, Dr. GRPO, DAPO) with LoRA sharded over processes",
    [],
    grpoDistributed,
  ),
  define(
    "knowledge_distillation_single_device",
    "distil a teacher model into a LoRA student on one device",
    [],
    knowledgeDistillation,
  ),
  define(
    "knowledge_distillation_distributed",
    "distil a teacher model into a LoRA student sharded over processes",
    [],
    knowledgeDistillationDistributed,
  ),
  define(
    "generate",
    "text generation from a checkpoint",
    ["alpaca_generate"],
    generate,
  ),
  define("eval", "loss and perplexity of a model on a dataset", [], evaluate),
  define(
    "eleuther_eval",
    "lm-evaluation-harness multiple-choice tasks (arc, piqa, hellaswag)",
    [],
    eleutherEval,
  ),
];

/** Shipped configs (names under configs/, no `.yaml`) for each recipe, as `tune ls` lists them. */
export const RECIPE_CONFIGS: Readonly<Record<string, readonly string[]>> = {
  full_finetune_single_device: [
    "llama2/7B_full_low_memory",
    "llama3_2/1B_full_single_device",
    "gemma/2B_full_single_device",
    "phi3/mini_full_single_device",
    "tiny/full_single_device",
    "alpaca_llama2_finetune",
  ],
  full_finetune_distributed: [
    "llama2/7B_full",
    "tiny/full_distributed",
    "alpaca_llama2_finetune",
    "alpaca_llama2_full_finetune",
  ],
  lora_finetune_single_device: [
    "gemma/2B_lora_single_device",
    "gemma/7B_lora_single_device",
    "llama2/7B_lora_single_device",
    "llama3_1/8B_lora_single_device",
    "llama3_2/1B_lora_single_device",
    "mistral/7B_lora_single_device",
    "phi3/mini_lora_single_device",
    "qwen2_5/0.5B_lora_single_device",
    "tiny/lora_single_device",
    "tiny/qlora_single_device",
    "alpaca_llama2_lora_finetune_single_device",
  ],
  lora_finetune_distributed: [
    "llama2/7B_lora",
    "tiny/lora_distributed",
    "alpaca_llama2_lora_finetune_distributed",
  ],
  grpo_finetune_single_device: ["tiny/grpo_single_device"],
  grpo_finetune_distributed: ["tiny/grpo_single_device"],
  lora_dpo_single_device: [
    "llama2/7B_lora_dpo_single_device",
    "llama3_2/1B_lora_dpo_single_device",
    "tiny/lora_dpo_single_device",
  ],
  lora_dpo_distributed: ["tiny/lora_dpo_distributed"],
  knowledge_distillation_single_device: [
    "llama3_2/8B_to_1B_KD_lora_single_device",
    "tiny/kd_single_device",
  ],
  knowledge_distillation_distributed: ["tiny/kd_distributed"],
  generate: ["llama2c/generate", "alpaca_llama2_generate"],
  eval: ["tiny/eval"],
  eleuther_eval: ["eleuther_evaluation", "tiny/eleuther_eval"],
};

/**
 * Early torchtune names whose meaning depends on how `tune` was launched: `finetune_llm`
 * was the one full fine-tuning recipe, run on one device or, under torchrun, with FSDP.
 * With launcher flags (`tune --nproc_per_node 2 finetune_llm ...`) it is
 * full_finetune_distributed; without them, full_finetune_single_device.
 */
export const LAUNCH_DEPENDENT_ALIASES: Readonly<
  Record<string, { single: string; distributed: string }>
> = {
  finetune_llm: {
    single: "full_finetune_single_device",
    distributed: "full_finetune_distributed",
  },
  // torchtune's dev recipe name
  "dev/grpo_full_finetune_distributed": {
    single: "grpo_finetune_single_device",
    distributed: "grpo_finetune_distributed",
  },
};

/** The canonical recipe name for a name or alias given on the command line, or undefined. */
export function canonicalRecipeName(
  name: string,
  launch: LaunchOptions,
): string | undefined {
  const bare = name.replace(/\.(ts|py)$/, "");
  const dep = Object.hasOwn(LAUNCH_DEPENDENT_ALIASES, bare)
    ? LAUNCH_DEPENDENT_ALIASES[bare]
    : undefined;
  if (dep) return launch.explicit ? dep.distributed : dep.single;
  return RECIPES.find((r) => r.name === bare || r.aliases.includes(bare))?.name;
}

/** Every name `tune run` accepts (recipes, aliases, launch-dependent aliases). */
export function allRecipeNames(): string[] {
  return [
    ...RECIPES.flatMap((r) => [r.name, ...r.aliases]),
    ...Object.keys(LAUNCH_DEPENDENT_ALIASES),
  ];
}

/** The recipe for a name or alias; an unknown name is a TuneError with the closest name. */
export function findRecipe(
  name: string,
  launch: LaunchOptions,
): RecipeDefinition {
  const canonical = canonicalRecipeName(name, launch);
  const recipe = RECIPES.find((r) => r.name === canonical);
  if (!recipe) {
    throw new TuneError(
      `unknown recipe '${name}'${didYouMean(name, allRecipeNames())} (tune ls lists them)`,
    );
  }
  return recipe;
}

/** The recipes that list a shipped config. */
export function recipesForConfig(configName: string): RecipeDefinition[] {
  return RECIPES.filter((r) => RECIPE_CONFIGS[r.name]?.includes(configName));
}

/**
 * The file that holds each training recipe's code: a `_single_device` and a `_distributed`
 * entry point are one recipe for 1..N processes, so `tune cp` gives the whole recipe.
 */
const RECIPE_SOURCES: Readonly<Record<string, string>> = {
  full_finetune_single_device: "finetune",
  full_finetune_distributed: "finetune",
  lora_finetune_single_device: "finetune",
  lora_finetune_distributed: "finetune",
  lora_dpo_single_device: "lora_dpo",
  lora_dpo_distributed: "lora_dpo",
  knowledge_distillation_single_device: "knowledge_distillation",
  knowledge_distillation_distributed: "knowledge_distillation",
};

/**
 * The source file of a recipe, for `tune cp`: the file with its setup and train loop
 * (runnable as copied: it exports `params` and `main` for 1..N processes).
 */
export function recipeSourceUrl(name: string): URL {
  return new URL(`./${RECIPE_SOURCES[name] ?? name}.ts`, import.meta.url);
}
