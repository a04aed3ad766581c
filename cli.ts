/**
 * The `tune` command: list, copy, print and validate configs, and run recipes.
 * `deno task tune --help` (or `tune --help` when compiled) prints the usage.
 *
 * A TuneError (bad input) prints `tune: <message>` on one line and exits 1; any other
 * error is a bug in tune and prints its stack.
 */
import "./src/components.ts";
import { checkConfigPaths } from "./src/config/path_checks.ts";
import { checkRunKeys, logs, setLogLevel, withRunKeys } from "./src/config/run_keys.ts";
import { type CliCommand, launchFlagArgs, parseArgv, SUBCOMMANDS } from "./src/config/argv.ts";
import { downloadCommand } from "./src/hub/download_command.ts";
import { exportCommand } from "./src/export/command.ts";
import { launch as launchProcesses, needsLaunch } from "./src/distributed/launch.ts";
import { loadMerged, loadRecipeConfig, recipeFromHeader } from "./src/config/load.ts";
import type { RecipeDefinition } from "./src/config/recipe.ts";
import { defaultLaunchOptions } from "./src/config/recipe.ts";
import { ignoredKeyNotes } from "./src/config/notes.ts";
import { displayTree } from "./src/config/resolve.ts";
import { findConfig, listShippedConfigs, shippedConfigUrl } from "./src/config/shipped.ts";
import { didYouMean } from "./src/config/suggest.ts";
import { stringifyConfig } from "./src/config/yaml.ts";
import { TuneError } from "./src/errors.ts";
import {
  allRecipeNames,
  canonicalRecipeName,
  findRecipe,
  LAUNCH_DEPENDENT_ALIASES,
  RECIPE_CONFIGS,
  RECIPES,
  recipesForConfig,
  recipeSourceUrl,
} from "./recipes/registry.ts";

const USAGE = `tune: fine-tune LLMs with torchtune-style recipes and configs

usage:
  tune ls                                       list recipes and their shipped configs
  tune cp <config|recipe> <dest> [-n] [--make-parents]
                                                copy a shipped config or recipe to edit
  tune cat <config> [key=value ...] [~key ...]  print a config with overrides applied
  tune validate [<recipe>] --config <name|path> [key=value ...]
                                                check a config without running anything
  tune run [launcher flags] <recipe> --config <name|path> [key=value ...] [~key ...]
                                                run a recipe
  tune download <repo_id> --output-dir DIR     download a model from the Hugging Face Hub
  tune export gguf|hf ...                       a checkpoint folder as GGUF, or back (tune export --help)
  tune demo                                     run the built-in demo

launcher flags (torchrun's): --nnodes N --nproc_per_node N --node_rank N
                             --master_addr HOST --master_port PORT
overrides: key=value (dotted keys reach sections: optimizer.lr=2e-5; lists: a,b or [a,b]),
           ~key deletes a key (its default applies again)
early torchtune forms also work:
  tune --nnodes 1 --nproc_per_node 2 <recipe> --config <name> --override key=value ...
  tune alpaca_generate --native-checkpoint-path P --tokenizer-path T --input "..."`;

/** Run the CLI on arguments (without the program name). */
export async function runCli(argv: readonly string[]): Promise<void> {
  if (argv[0] === "export") return exportCommand(argv.slice(1));
  const cmd = parseArgv(argv);
  switch (cmd.kind) {
    case "help":
      console.log(cmd.recipe ? recipeHelp(findRecipe(cmd.recipe, defaultLaunchOptions())) : USAGE);
      return;
    case "ls":
      return listRecipes();
    case "cp":
      return await copy(cmd);
    case "cat":
      return cat(cmd);
    case "validate":
      return validate(cmd);
    case "run":
      return await run(cmd);
    case "demo":
      return await demo(cmd.args);
    case "download": {
      const code = await downloadCommand(cmd.args);
      if (code !== 0) Deno.exit(code);
      return;
    }
  }
}

/** `tune run <recipe> --help`: the recipe's parameters (key, type, default, doc) and configs. */
function recipeHelp(recipe: RecipeDefinition): string {
  const rows = Object.entries(recipe.params).map(([key, spec]) => {
    const type = spec.type === "component" ? `${spec.kind} component` : spec.type;
    const choices = spec.type === "string" && spec.choices ? ` (${spec.choices.join("|")})` : "";
    const def = spec.required
      ? "required"
      : "default" in spec && spec.default !== undefined
      ? `default ${JSON.stringify(spec.default)}`
      : "default null";
    return [key, type + choices, def, spec.doc];
  });
  const w = [0, 1, 2].map((c) => Math.max(...rows.map((r) => r[c].length)));
  const lines = [
    `${recipe.name}: ${recipe.description}`,
    `usage: tune run [launcher flags] ${recipe.name} --config <name|path> [key=value ...] [~key ...]`,
    `configs: ${(RECIPE_CONFIGS[recipe.name] ?? []).join(", ") || "none"}`,
    "",
    "parameters:",
    ...rows.map((r) =>
      `  ${r[0].padEnd(w[0])}  ${r[1].padEnd(w[1])}  ${r[2].padEnd(w[2])}  ${r[3]}`
    ),
  ];
  const aliases = Object.entries(recipe.keyAliases);
  if (aliases.length) {
    lines.push("", `key aliases: ${aliases.map(([a, t]) => `${a} -> ${t}`).join(", ")}`);
  }
  lines.push("", "A component section's own keys: see the builder in src/*/components.ts.");
  return lines.join("\n");
}

function listRecipes(): void {
  const width = Math.max(...RECIPES.map((r) => r.name.length)) + 4;
  console.log("RECIPE".padEnd(width) + "CONFIG");
  for (const r of RECIPES) {
    const configs = RECIPE_CONFIGS[r.name] ?? [];
    console.log(r.name.padEnd(width) + (configs[0] ?? ""));
    for (const c of configs.slice(1)) console.log("".padEnd(width) + c);
  }
  const aliases = [
    ...RECIPES.flatMap((r) => r.aliases.map((a) => `${a} -> ${r.name}`)),
    ...Object.entries(LAUNCH_DEPENDENT_ALIASES).map(([a, t]) =>
      `${a} -> ${t.single} (${t.distributed} with launcher flags)`
    ),
  ];
  console.log(`\naliases: ${aliases.join(", ")}`);
}

async function copy(cmd: Extract<CliCommand, { kind: "cp" }>): Promise<void> {
  let from: URL;
  let ext: string;
  const configUrl = shippedConfigUrl(cmd.source);
  const recipeName = canonicalRecipeName(cmd.source, defaultLaunchOptions());
  if (configUrl) {
    from = configUrl;
    ext = ".yaml";
  } else if (recipeName) {
    from = recipeSourceUrl(recipeName);
    ext = ".ts";
  } else {
    throw new TuneError(
      `tune cp: '${cmd.source}' is neither a shipped config nor a recipe` +
        didYouMean(cmd.source, [...listShippedConfigs(), ...allRecipeNames()]) +
        " (tune ls lists them)",
    );
  }
  let dest = cmd.dest;
  // a recipe's copy is named after the recipe asked for (its code may live in a shared file)
  const base = recipeName && !configUrl
    ? `${recipeName}.ts`
    : from.pathname.slice(from.pathname.lastIndexOf("/") + 1);
  if (isDirectory(dest)) dest = `${dest.replace(/\/+$/, "")}/${base}`;
  else if (!/\.[A-Za-z0-9]+$/.test(dest)) dest += ext;
  const parent = dest.includes("/") ? dest.slice(0, dest.lastIndexOf("/")) || "/" : ".";
  if (!isDirectory(parent)) {
    if (!cmd.makeParents) {
      throw new TuneError(
        `tune cp: cannot create ${dest}: directory ${parent} does not exist (add --make-parents)`,
      );
    }
    await Deno.mkdir(parent, { recursive: true });
  }
  if (cmd.noClobber && exists(dest)) {
    console.error(`tune cp: ${dest} exists; not overwriting (-n)`);
    return;
  }
  const text = await Deno.readTextFile(from);
  const tmp = `${dest}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, text);
  await Deno.rename(tmp, dest);
  console.log(`Copied ${cmd.source} to ${dest}`);
}

function cat(cmd: Extract<CliCommand, { kind: "cat" }>): void {
  const candidates = recipeCandidates(cmd.config);
  const recipe = candidates[0];
  const { tree } = loadMerged(cmd.config, cmd.overrides, recipe?.keyAliases ?? {});
  const shown = displayTree(tree, recipe?.params) as Record<string, unknown>;
  Deno.stdout.writeSync(new TextEncoder().encode(stringifyConfig(shown)));
}

function validate(cmd: Extract<CliCommand, { kind: "validate" }>): void {
  const recipes = cmd.recipe
    ? [findRecipe(cmd.recipe, defaultLaunchOptions())]
    : recipeCandidates(cmd.config);
  if (recipes.length === 0) {
    throw new TuneError(
      `cannot tell which recipe config '${cmd.config}' is for; name it: tune validate <recipe> --config ${cmd.config}`,
    );
  }
  for (const recipe of recipes) {
    const { source, config } = loadRecipeConfig(recipe, cmd.config, cmd.overrides);
    // the process count is not known here: data_parallel_shard_dim is checked at run
    checkRunKeys(config, null);
    const notes = checkConfigPaths(config, "validate");
    console.log(`Config is well-formed: ${source.label} for recipe ${recipe.name}`);
    for (const note of notes) console.log(`note: ${note} (tune run will need it)`);
  }
}

/** The recipes a config goes with: listed in recipes/registry.ts, else named in its header. */
function recipeCandidates(configRef: string): RecipeDefinition[] {
  const source = findConfig(configRef);
  if (source.shipped && source.name) {
    const listed = recipesForConfig(source.name);
    if (listed.length) return listed;
  }
  const named = recipeFromHeader(source.text);
  if (named === undefined) return [];
  const single = canonicalRecipeName(named, defaultLaunchOptions());
  const multi = canonicalRecipeName(named, { ...defaultLaunchOptions(), explicit: true });
  return RECIPES.filter((r) => r.name === single || r.name === multi);
}

async function run(cmd: Extract<CliCommand, { kind: "run" }>): Promise<void> {
  const recipe = await userRecipe(cmd.recipe) ?? knownRecipe(cmd);
  if (cmd.config === undefined) {
    const configs = RECIPE_CONFIGS[recipe.name] ?? [];
    throw new TuneError(
      `tune run ${recipe.name} needs --config <name|path>; shipped configs for it: ${
        configs.join(", ") || "none"
      }`,
    );
  }
  // Resolve first, so a bad config fails once here rather than once per process.
  const { source, config } = loadRecipeConfig(recipe, cmd.config, cmd.overrides);
  setLogLevel(config.log_level as string);
  checkRunKeys(config, worldSizeOf(cmd.launch));
  checkConfigPaths(config, "run");
  const launch = { ...cmd.launch, recipeArgv: [recipe.name, ...cmd.recipeArgs] };
  if (needsLaunch(launch) && Deno.env.get("TUNE_LAUNCHED") !== "1") {
    // The launcher: one child per local rank runs this same command with torchrun's
    // environment (RANK, WORLD_SIZE, ...) and TUNE_LAUNCHED=1, then calls main there.
    const code = await launchProcesses(launch, [
      "run",
      ...launchFlagArgs(launch),
      ...launch.recipeArgv,
    ]);
    if (code !== 0) Deno.exit(code);
    return;
  }
  if (logs("INFO")) console.error(`tune: running ${recipe.name} with config ${source.label}`);
  if (logs("DEBUG")) {
    const shown = displayTree(config, recipe.params) as Record<string, unknown>;
    console.error(`tune: resolved config:\n${stringifyConfig(shown).trimEnd()}`);
  }
  if (logs("WARNING")) {
    for (const note of ignoredKeyNotes(recipe.params, config)) console.error(`tune: note: ${note}`);
  }
  await recipe.main(config, launch);
}

/** A recipe of recipes/registry.ts by name or alias; an unknown name is a TuneError. */
function knownRecipe(cmd: Extract<CliCommand, { kind: "run" }>): RecipeDefinition {
  if (!cmd.viaRun && canonicalRecipeName(cmd.recipe, cmd.launch) === undefined) {
    throw new TuneError(
      `unknown command or recipe '${cmd.recipe}'` +
        didYouMean(cmd.recipe, [...SUBCOMMANDS, ...allRecipeNames()]) + " (tune --help)",
    );
  }
  return findRecipe(cmd.recipe, cmd.launch);
}

/**
 * A recipe file of the user's (`tune run ./my_lora.ts --config ...`, e.g. one made with
 * `tune cp` into recipes/ and edited): it must export `params`, `main` and optionally
 * `keyAliases`, like the shipped recipes. Undefined when `ref` is not an existing .ts file.
 */
async function userRecipe(ref: string): Promise<RecipeDefinition | undefined> {
  if (!/\.(ts|js|mjs)$/.test(ref) || !exists(ref) || isDirectory(ref)) return undefined;
  const url = new URL(ref, `file://${Deno.cwd()}/`);
  let mod: Record<string, unknown>;
  try {
    mod = await import(url.href);
  } catch (e) {
    const first = String(e instanceof Error ? e.message : e).split("\n")[0];
    throw new TuneError(`cannot load recipe file ${ref}: ${first}`);
  }
  if (typeof mod.main !== "function" || typeof mod.params !== "object" || mod.params === null) {
    throw new TuneError(
      `${ref} is not a recipe: it must export params and main (see src/config/recipe.ts)`,
    );
  }
  return {
    name: ref,
    aliases: [],
    description: `recipe file ${ref}`,
    params: withRunKeys(mod.params as RecipeDefinition["params"]),
    keyAliases: (mod.keyAliases ?? {}) as Record<string, string>,
    main: mod.main as RecipeDefinition["main"],
  };
}

async function demo(args: string[]): Promise<void> {
  const url = new URL("./recipes/demo.ts", import.meta.url);
  if (!exists(url)) {
    throw new TuneError("the demo is not available in this build (recipes/demo.ts is missing)");
  }
  const mod = await import(url.href) as { main?: (args: string[]) => Promise<void> | void };
  if (typeof mod.main !== "function") throw new Error("recipes/demo.ts exports no main()");
  await mod.main(args);
}

function isDirectory(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

function exists(path: string | URL): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Print a TuneError as one line and exit 1; print anything else with its stack (a bug). */
export async function main(argv: readonly string[]): Promise<void> {
  try {
    await runCli(argv);
  } catch (e) {
    if (e instanceof TuneError) {
      console.error(`tune: ${e.message.replaceAll("\n", " ")}`);
    } else {
      console.error("tune: internal error (a bug in tune; please report it):");
      console.error(e instanceof Error ? e.stack ?? e.message : e);
    }
    Deno.exit(1);
  }
}

if (import.meta.main) await main(Deno.args);

/** Processes of the run: the launcher's flags, or WORLD_SIZE under an outside launcher. */
function worldSizeOf(launch: { nnodes: number; nprocPerNode: number }): number {
  const env = Number(Deno.env.get("WORLD_SIZE"));
  return Number.isInteger(env) && env > 0 ? env : launch.nnodes * launch.nprocPerNode;
}
