/**
 * The `tune` command line, parsed into a typed command (no files read, nothing run).
 *
 *   tune ls
 *   tune cp <config|recipe> <dest> [-n|--no-clobber] [--make-parents]
 *   tune cat <config> [key=value ...] [~key ...]
 *   tune validate [<recipe>] --config <name|path> [key=value ...] [~key ...]
 *   tune [launcher flags] run [launcher flags] <recipe> --config <name|path> [key=value ...] [~key ...]
 *   tune [launcher flags] <recipe> --config <name> [--override key=value ...]   (torchtune's early form)
 *   tune alpaca_generate --native-checkpoint-path P --tokenizer-path T --input "..."   (early form)
 *   tune download <repo_id> --output-dir DIR [...]   (src/hub/download_command.ts)
 *   tune demo [args]
 *
 * Launcher flags (torchrun's): --nnodes, --nproc_per_node, --node_rank, --master_addr,
 * --master_port, each as `--flag value` or `--flag=value` (dashes or underscores).
 */
import { TuneError } from "../errors.ts";
import { type Override, parseOverrides } from "./overrides.ts";
import { defaultLaunchOptions, type LaunchOptions } from "./recipe.ts";
import { closest, editDistance } from "./suggest.ts";

/** A parsed `tune` command. */
export type CliCommand =
  | { kind: "help"; recipe?: string }
  | { kind: "ls" }
  | { kind: "cp"; source: string; dest: string; noClobber: boolean; makeParents: boolean }
  | { kind: "cat"; config: string; overrides: Override[] }
  | { kind: "validate"; recipe?: string; config: string; overrides: Override[] }
  | {
    kind: "run";
    /** The recipe name or alias as typed. */
    recipe: string;
    /** The config reference; undefined when none was given. */
    config?: string;
    overrides: Override[];
    launch: LaunchOptions;
    /** The arguments after the recipe name, with a legacy form rewritten to `tune run` form. */
    recipeArgs: string[];
    /** True for `tune run ...`; false for the early forms (`tune <recipe> ...`). */
    viaRun: boolean;
  }
  | { kind: "demo"; args: string[] }
  | { kind: "download"; args: string[] };

/** Subcommands other than recipes (for "did you mean"). */
export const SUBCOMMANDS = [
  "ls",
  "cp",
  "cat",
  "validate",
  "run",
  "download",
  "demo",
  "help",
] as const;

const LAUNCH_FLAGS: Record<string, keyof Omit<LaunchOptions, "explicit" | "recipeArgv">> = {
  nnodes: "nnodes",
  nproc_per_node: "nprocPerNode",
  node_rank: "nodeRank",
  master_addr: "masterAddr",
  master_port: "masterPort",
};

/** Config used by `tune alpaca_generate` when no `--config` is given. */
export const ALPACA_GENERATE_CONFIG = "alpaca_llama2_generate";

/** Parse the arguments after `tune`. Bad usage is a TuneError. */
export function parseArgv(argv: readonly string[]): CliCommand {
  // `--help` anywhere (except for `tune download`, which has its own) prints the usage.
  if (argv[0] !== "download" && argv.some((a) => a === "--help" || a === "-h")) {
    // `tune run <recipe> --help` (or `tune <recipe> --help`) describes that recipe.
    const words = argv.filter((a) => a !== "--help" && a !== "-h");
    const probe = defaultLaunchOptions();
    let j = consumeLaunchFlags(words, 0, probe);
    if (words[j] === "run") j = consumeLaunchFlags(words, j + 1, probe);
    const word = words[j];
    const isRecipe = word !== undefined && !word.startsWith("-") &&
      !(SUBCOMMANDS as readonly string[]).includes(word);
    return isRecipe ? { kind: "help", recipe: word } : { kind: "help" };
  }
  const launch = defaultLaunchOptions();
  let i = consumeLaunchFlags(argv, 0, launch);
  const head = argv[i];
  if (head === undefined || head === "help" || head === "-h" || head === "--help") {
    if (launch.explicit) {
      throw new TuneError("launcher flags need a recipe: tune run [flags] <recipe> ...");
    }
    return { kind: "help" };
  }
  if (head.startsWith("-")) {
    throw new TuneError(
      `unknown option '${head}'; launcher flags are ${
        Object.keys(LAUNCH_FLAGS).map((f) => `--${f}`).join(", ")
      }`,
    );
  }
  const rest = argv.slice(i + 1);
  const noLaunch = (cmd: string) => {
    if (launch.explicit) throw new TuneError(`launcher flags do not apply to 'tune ${cmd}'`);
  };
  switch (head) {
    case "ls":
      noLaunch(head);
      if (rest.length) throw new TuneError(`tune ls takes no arguments, got '${rest[0]}'`);
      return { kind: "ls" };
    case "cp":
      noLaunch(head);
      return parseCp(rest);
    case "cat": {
      noLaunch(head);
      const [config, ...more] = rest;
      if (config === undefined || config.startsWith("-") || config.includes("=")) {
        throw new TuneError("usage: tune cat <config> [key=value ...] [~key ...]");
      }
      return { kind: "cat", config, overrides: parseRecipeArgs(more, "cat").overrides };
    }
    case "validate":
      noLaunch(head);
      return parseValidate(rest);
    case "demo":
      noLaunch(head);
      return { kind: "demo", args: rest };
    case "download":
      noLaunch(head);
      return { kind: "download", args: rest };
    case "alpaca_generate":
      return parseAlpacaGenerate(rest, launch);
    case "run": {
      i = consumeLaunchFlags(argv, i + 1, launch);
      const recipe = argv[i];
      if (recipe === undefined || recipe.startsWith("-")) {
        throw new TuneError(
          recipe === undefined
            ? "usage: tune run [launcher flags] <recipe> --config <name|path> [key=value ...]"
            : `unknown option '${recipe}' before the recipe name; launcher flags are ${
              Object.keys(LAUNCH_FLAGS).map((f) => `--${f}`).join(", ")
            }`,
        );
      }
      if (recipe === "alpaca_generate") {
        return { ...parseAlpacaGenerate(argv.slice(i + 1), launch), viaRun: true };
      }
      return runCommand(recipe, argv.slice(i + 1), launch, true);
    }
    default: {
      // A word with no underscore, dot or slash is no recipe name or file (every recipe and
      // alias has an underscore): a mistyped subcommand such as `tune rnu`.
      const typo = /^[a-z]+$/i.test(head) ? closest(head, SUBCOMMANDS) : undefined;
      if (typo !== undefined && editDistance(head.toLowerCase(), typo) <= 2) {
        throw new TuneError(
          `unknown command or recipe '${head}'; did you mean '${typo}'? (tune --help)`,
        );
      }
      // torchtune's early form: the recipe name right after the launcher flags.
      return runCommand(head, rest, launch, false);
    }
  }
}

function runCommand(
  recipe: string,
  args: readonly string[],
  launch: LaunchOptions,
  viaRun: boolean,
): Extract<CliCommand, { kind: "run" }> {
  const { config, overrides, args: normalized } = parseRecipeArgs(args, "run");
  return { kind: "run", recipe, config, overrides, launch, recipeArgs: normalized, viaRun };
}

/** Read launcher flags from `start` on; returns the index of the first other token. */
function consumeLaunchFlags(argv: readonly string[], start: number, launch: LaunchOptions): number {
  let i = start;
  while (i < argv.length && argv[i].startsWith("--")) {
    const eq = argv[i].indexOf("=");
    const flag = (eq < 0 ? argv[i].slice(2) : argv[i].slice(2, eq)).replaceAll("-", "_");
    const field = Object.hasOwn(LAUNCH_FLAGS, flag) ? LAUNCH_FLAGS[flag] : undefined;
    if (!field) break;
    let value: string | undefined;
    if (eq >= 0) value = argv[i].slice(eq + 1);
    else {
      value = argv[i + 1];
      i++;
    }
    if (value === undefined) throw new TuneError(`--${flag} needs a value`);
    setLaunch(launch, flag, field, value);
    i++;
  }
  if (launch.explicit && launch.nodeRank >= launch.nnodes) {
    throw new TuneError(
      `--node_rank ${launch.nodeRank} must be below --nnodes ${launch.nnodes}`,
    );
  }
  return i;
}

function setLaunch(
  launch: LaunchOptions,
  flag: string,
  field: keyof Omit<LaunchOptions, "explicit" | "recipeArgv">,
  value: string,
): void {
  launch.explicit = true;
  if (field === "masterAddr") {
    if (value === "") throw new TuneError("--master_addr needs a host name or address");
    launch.masterAddr = value;
    return;
  }
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  const min = field === "nodeRank" ? 0 : 1;
  const max = field === "masterPort" ? 65535 : Number.MAX_SAFE_INTEGER;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new TuneError(
      `--${flag} expects an integer ${
        field === "masterPort" ? "from 1 to 65535" : min === 0 ? ">= 0" : ">= 1"
      }, got '${value}'`,
    );
  }
  launch[field] = n;
}

/**
 * `--config X` (or `--config=X`), `--override k=v ...` (torchtune's early form: every
 * following key=value), plain `k=v` and `~k`. Returns the args rewritten in `tune run` form.
 */
function parseRecipeArgs(
  args: readonly string[],
  cmd: string,
): { config?: string; overrides: Override[]; overrideArgs: string[]; args: string[] } {
  let config: string | undefined;
  const overrideArgs: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--config" || a === "-c") {
      config = args[++i];
      if (config === undefined) throw new TuneError(`${a} needs a config name or path`);
    } else if (a.startsWith("--config=")) {
      config = a.slice("--config=".length);
    } else if (a === "--override" || a === "--overrides") {
      // The pairs that follow are ordinary overrides.
    } else if (a.startsWith("-") && !a.startsWith("~")) {
      throw new TuneError(
        `unknown option '${a}' for tune ${cmd}; set config keys as key=value (e.g. batch_size=4)`,
      );
    } else {
      overrideArgs.push(a);
    }
  }
  const normalized = [...(config === undefined ? [] : ["--config", config]), ...overrideArgs];
  return { config, overrides: parseOverrides(overrideArgs), overrideArgs, args: normalized };
}

function parseValidate(args: readonly string[]): CliCommand {
  let recipe: string | undefined;
  const rest: string[] = [];
  let positionalConfig: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--config" || a === "-c") {
      rest.push(a, args[++i] ?? "");
      if (args[i] === undefined) throw new TuneError(`${a} needs a config name or path`);
    } else if (!a.startsWith("-") && !a.startsWith("~") && !a.includes("=")) {
      // A bare word: a config path/name (torchtune's `tune validate <config>`), or the recipe.
      // (torchtune's dev recipes have a "/" as configs do: dev/grpo_full_finetune_distributed)
      const path = a.includes("/") && !a.startsWith("dev/");
      if (/\.ya?ml$/.test(a) || path || recipe !== undefined) positionalConfig = a;
      else recipe = a;
    } else {
      rest.push(a);
    }
  }
  const parsed = parseRecipeArgs(rest, "validate");
  let config = parsed.config ?? positionalConfig;
  if (config === undefined && recipe !== undefined) {
    // `tune validate my_config` with no --config: the bare word was the config.
    config = recipe;
    recipe = undefined;
  }
  if (config === undefined) {
    throw new TuneError("usage: tune validate [<recipe>] --config <name|path> [key=value ...]");
  }
  return { kind: "validate", recipe, config, overrides: parsed.overrides };
}

function parseCp(args: readonly string[]): CliCommand {
  const positional: string[] = [];
  let noClobber = false;
  let makeParents = false;
  for (const a of args) {
    if (a === "-n" || a === "--no-clobber") noClobber = true;
    else if (a === "--make-parents" || a === "--make_parents") makeParents = true;
    else if (a.startsWith("-")) throw new TuneError(`unknown option '${a}' for tune cp`);
    else positional.push(a);
  }
  if (positional.length !== 2) {
    throw new TuneError(
      "usage: tune cp <config|recipe> <dest> [-n|--no-clobber] [--make-parents]",
    );
  }
  return { kind: "cp", source: positional[0], dest: positional[1], noClobber, makeParents };
}

/**
 * torchtune's early `tune alpaca_generate --native-checkpoint-path P --tokenizer-path T
 * --input "..."`: the generate recipe with checkpointer.checkpoint_dir = dirname(P),
 * checkpointer.checkpoint_files = [basename(P)], tokenizer.path = T, prompt = the input.
 */
function parseAlpacaGenerate(
  args: readonly string[],
  launch: LaunchOptions,
): Extract<CliCommand, { kind: "run" }> {
  const legacy: Record<string, (v: string) => string[]> = {
    "native_checkpoint_path": (p) => {
      const slash = p.lastIndexOf("/");
      const dir = slash < 0 ? "." : slash === 0 ? "/" : p.slice(0, slash);
      return [
        `checkpointer.checkpoint_dir=${dir}`,
        `checkpointer.checkpoint_files=[${p.slice(slash + 1)}]`,
      ];
    },
    "tokenizer_path": (p) => [`tokenizer.path=${p}`],
    "input": (t) => [`prompt=${t}`],
    "prompt": (t) => [`prompt=${t}`],
    "max_new_tokens": (t) => [`max_new_tokens=${t}`],
    "temperature": (t) => [`temperature=${t}`],
    "top_k": (t) => [`top_k=${t}`],
    "seed": (t) => [`seed=${t}`],
  };
  const rewritten: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const m = /^--([a-z_-]+)(?:=(.*))?$/s.exec(a);
    const name = m?.[1].replaceAll("-", "_");
    if (m && name && Object.hasOwn(legacy, name)) {
      const value = m[2] ?? args[++i];
      if (value === undefined) throw new TuneError(`${a} needs a value`);
      rewritten.push(...legacy[name](value));
    } else {
      rewritten.push(a);
    }
  }
  const parsed = parseRecipeArgs(rewritten, "alpaca_generate");
  const config = parsed.config ?? ALPACA_GENERATE_CONFIG;
  return {
    kind: "run",
    recipe: "generate",
    config,
    overrides: parsed.overrides,
    launch,
    recipeArgs: ["--config", config, ...parsed.overrideArgs],
    viaRun: false,
  };
}

/** Launcher flags as command-line words (`--nnodes 1 --nproc_per_node 2 ...`), for children. */
export function launchFlagArgs(launch: LaunchOptions): string[] {
  return [
    "--nnodes",
    String(launch.nnodes),
    "--nproc_per_node",
    String(launch.nprocPerNode),
    "--node_rank",
    String(launch.nodeRank),
    "--master_addr",
    launch.masterAddr,
    "--master_port",
    String(launch.masterPort),
  ];
}
