/**
 * Every shipped config: listed under a recipe in recipes/registry.ts, its first line the
 * command that runs it, and valid against each recipe that lists it (every key known,
 * every type right, every `_component_` registered with valid arguments).
 */
import assert from "node:assert/strict";
import "../src/components.ts";
import { parseArgv } from "../src/config/argv.ts";
import { loadRecipeConfig } from "../src/config/load.ts";
import type { ComponentSection } from "../src/config/schema.ts";
import { listShippedConfigs } from "../src/config/shipped.ts";
import { findRecipe, RECIPE_CONFIGS, recipesForConfig } from "../recipes/registry.ts";

const SHIPPED = listShippedConfigs();

Deno.test("listShippedConfigs() finds every configs/**/*.yaml and each is listed under a recipe", () => {
  const onDisk: string[] = [];
  const walk = (dir: URL, prefix: string) => {
    for (const e of Deno.readDirSync(dir)) {
      if (e.isDirectory) walk(new URL(`${e.name}/`, dir), `${prefix}${e.name}/`);
      else if (e.name.endsWith(".yaml")) onDisk.push(prefix + e.name.slice(0, -5));
    }
  };
  walk(new URL("../configs/", import.meta.url), "");
  assert.deepEqual(SHIPPED, onDisk.sort());
  assert.ok(SHIPPED.length >= 20, `found ${SHIPPED.length} configs`);
  for (const name of SHIPPED) {
    assert.ok(recipesForConfig(name).length > 0, `${name} is listed under a recipe`);
  }
  for (const [recipe, configs] of Object.entries(RECIPE_CONFIGS)) {
    for (const c of configs) assert.ok(SHIPPED.includes(c), `${recipe} lists ${c}, which exists`);
  }
});

Deno.test("every shipped config starts with the command that runs it", () => {
  for (const name of SHIPPED) {
    const text = Deno.readTextFileSync(new URL(`../configs/${name}.yaml`, import.meta.url));
    const first = text.split("\n")[0];
    assert.match(first, /^# deno task tune /, `${name}: first line is the command`);
    const cmd = parseArgv(
      first.replace(/^# deno task tune /, "").match(/"[^"]*"|\S+/g)!.map((t) =>
        t.replace(/^"|"$/g, "")
      ),
    );
    assert.equal(cmd.kind, "run", name);
    if (cmd.kind !== "run") continue;
    assert.equal(cmd.config, name, `${name}: the command names this config`);
    const recipe = findRecipe(cmd.recipe, cmd.launch);
    assert.ok(
      recipesForConfig(name).some((r) => r.name === recipe.name),
      `${name}: its command runs ${recipe.name}, which lists it`,
    );
  }
});

for (const name of SHIPPED) {
  for (const recipe of recipesForConfig(name)) {
    Deno.test(`loadRecipeConfig() validates shipped config ${name} for ${recipe.name}`, () => {
      const { config } = loadRecipeConfig(recipe, name, []);
      for (const [key, spec] of Object.entries(recipe.params)) {
        if (spec.type === "component" && config[key] !== null) {
          // a component key may hold a list (dataset: [...], reward_fns: [...])
          const list = [config[key]].flat() as ComponentSection[];
          for (const c of list) assert.ok(typeof c._component_ === "string", key);
        }
      }
    });
  }
}

Deno.test("the torchtune README LoRA command resolves like its tune run form, lora keys in model", () => {
  const resolve = (argv: string[]) => {
    const cmd = parseArgv(argv);
    assert.equal(cmd.kind, "run");
    if (cmd.kind !== "run") throw new Error("unreachable");
    const recipe = findRecipe(cmd.recipe, cmd.launch);
    return {
      recipe: recipe.name,
      cfg: loadRecipeConfig(recipe, cmd.config!, cmd.overrides).config,
    };
  };
  const early = resolve(
    "--nnodes 1 --nproc_per_node 2 lora_finetune_distributed --config alpaca_llama2_lora_finetune_distributed --override lora_attn_modules=q_proj,k_proj,v_proj lora_rank=4"
      .split(" "),
  );
  const modern = resolve(
    "run --nproc_per_node 2 lora_finetune_distributed --config alpaca_llama2_lora_finetune_distributed.yaml model.lora_attn_modules=[q_proj,k_proj,v_proj] model.lora_rank=4"
      .split(" "),
  );
  assert.equal(early.recipe, "lora_finetune_distributed");
  assert.deepEqual(early, modern);
  const model = early.cfg.model as ComponentSection;
  assert.deepEqual(model.lora_attn_modules, ["q_proj", "k_proj", "v_proj"]);
  assert.equal(model.lora_rank, 4);
});

Deno.test("the torchtune README finetune_llm command resolves to full_finetune_distributed", () => {
  const cmd = parseArgv(
    "--nnodes 1 --nproc_per_node 4 finetune_llm --config alpaca_llama2_finetune".split(" "),
  );
  assert.equal(cmd.kind, "run");
  if (cmd.kind !== "run") return;
  const recipe = findRecipe(cmd.recipe, cmd.launch);
  assert.equal(recipe.name, "full_finetune_distributed");
  const { config } = loadRecipeConfig(recipe, cmd.config!, cmd.overrides);
  assert.equal(config.batch_size, 2);
});

Deno.test("tune alpaca_generate resolves like tune run generate with the same keys", () => {
  const legacy = parseArgv([
    "alpaca_generate",
    "--native-checkpoint-path",
    "/ckpt/llama2-7b/consolidated.00.pth",
    "--tokenizer-path",
    "/ckpt/llama2-7b/tokenizer.model",
    "--input",
    "Tell me, briefly, about llamas.",
  ]);
  assert.equal(legacy.kind, "run");
  if (legacy.kind !== "run") return;
  const recipe = findRecipe(legacy.recipe, legacy.launch);
  const { config } = loadRecipeConfig(recipe, legacy.config!, legacy.overrides);
  const ckpt = config.checkpointer as ComponentSection;
  assert.equal(recipe.name, "generate");
  assert.equal(ckpt.checkpoint_dir, "/ckpt/llama2-7b");
  assert.deepEqual(ckpt.checkpoint_files, ["consolidated.00.pth"]);
  assert.equal((config.tokenizer as ComponentSection).path, "/ckpt/llama2-7b/tokenizer.model");
  assert.equal(config.prompt, "Tell me, briefly, about llamas.");
});
