/**
 * The recipe contract: what `tune run` needs from a recipe.
 *
 * A recipe is one file in recipes/ (recipes/<name>.ts) that exports, at its top,
 *
 *   export const params = { ... } satisfies ParamSchema;   // every top-level key, typed + documented
 *   export const keyAliases = { ... };                      // optional: top-level alias -> dotted target
 *   export async function main(cfg, launch) { ... }         // setup() then train(), like torchtune
 *
 * and recipes/registry.ts turns each file into a `RecipeDefinition` (adding its name,
 * aliases and description) and lists the shipped configs that go with it.
 *
 * The CLI resolves the config before calling `main`: values come from the params'
 * defaults, then the YAML, then the command line (later wins); every key is checked and
 * parsed by its declared type; every `_component_` section is checked against the
 * registered builder's own params (defaults applied). `main` receives that resolved
 * config and builds components with `instantiate()` (src/config/instantiate.ts).
 *
 * Processes: when launcher flags ask for more than one process in the job
 * (nnodes * nproc_per_node > 1), the CLI resolves the config, then starts one child per
 * local rank with src/distributed/launch.ts (torchrun's environment: RANK, LOCAL_RANK,
 * WORLD_SIZE, MASTER_ADDR, MASTER_PORT, plus TUNE_LAUNCHED=1) and waits. Each child runs
 * the same `tune run` command and calls `main` once, with the same LaunchOptions; a recipe
 * reads its rank from the environment and never starts processes itself. Without launcher
 * flags (or under an outside launcher such as torchrun/SLURM) `main` runs in this process.
 */
import type { ParamSchema, ResolvedConfig } from "./schema.ts";

/**
 * Launcher flags given before the recipe name (`tune --nnodes 1 --nproc_per_node 2 <recipe>`
 * or `tune run --nproc_per_node 2 <recipe>`), with torchrun's names and defaults.
 * src/distributed gives them their multi-process meaning.
 */
export interface LaunchOptions {
  /** Number of nodes (torchrun `--nnodes`). */
  nnodes: number;
  /** Processes (devices) per node (torchrun `--nproc_per_node`). */
  nprocPerNode: number;
  /** This node's rank, 0-based (torchrun `--node_rank`). */
  nodeRank: number;
  /** Address of the rank-0 node (torchrun `--master_addr`). */
  masterAddr: string;
  /** TCP port of the rank-0 rendezvous (torchrun `--master_port`). */
  masterPort: number;
  /** True when at least one launcher flag was given on the command line. */
  explicit: boolean;
  /**
   * The command line from the recipe name on (recipe, `--config X`, overrides), with the
   * launcher flags removed, so a launcher can start `tune run <recipeArgv...>` once per rank.
   */
  recipeArgv: string[];
}

/** Launch options when no launcher flag is given: one process on one node. */
export function defaultLaunchOptions(recipeArgv: string[] = []): LaunchOptions {
  return {
    nnodes: 1,
    nprocPerNode: 1,
    nodeRank: 0,
    masterAddr: "127.0.0.1",
    masterPort: 29500,
    explicit: false,
    recipeArgv,
  };
}

/** A runnable recipe as `tune` sees it. */
export interface RecipeDefinition<S extends ParamSchema = ParamSchema> {
  /** torchtune's recipe name, e.g. "lora_finetune_single_device". */
  name: string;
  /** Other names accepted on the command line (e.g. older torchtune names). */
  aliases: readonly string[];
  /** One line for `tune ls` and errors. */
  description: string;
  /** Every top-level config key the recipe reads. */
  params: S;
  /**
   * Top-level alias keys and the dotted key each stands for, e.g.
   * `{ lora_rank: "model.lora_rank" }` so early torchtune overrides (`lora_rank=4`) reach
   * the model section. Applied to the YAML and to overrides before validation.
   */
  keyAliases: Readonly<Record<string, string>>;
  /** Run the recipe on a resolved config. */
  main(cfg: ResolvedConfig<S>, launch: LaunchOptions): Promise<void>;
}
