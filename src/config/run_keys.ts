/**
 * Top-level keys that torchtune's configs carry for every recipe, beyond what a recipe reads
 * itself: the log level and the parallelism layout. Every recipe accepts them (added by
 * `withRunKeys`, so `tune run <recipe> --help` lists them with their docs), and
 * `checkRunKeys` gives each its meaning here before the recipe starts: implemented, or a
 * value tune has no way to honour refused in one line.
 */
import { TuneError } from "../errors.ts";
import { instantiate } from "./instantiate.ts";
import type { ComponentSection, ParamSchema } from "./schema.ts";

/** Python logging's level names, as torchtune's `log_level` takes them. */
export const LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL"] as const;

/** The keys and their docs. */
export const RUN_KEYS = {
  log_level: {
    type: "string",
    default: "INFO",
    choices: LOG_LEVELS,
    doc: "tune's own messages on stderr: DEBUG also prints the resolved config; INFO the setup " +
      "lines (running, resuming, saved); WARNING and above only notes and errors",
  },
  tensor_parallel_dim: {
    type: "int",
    default: 1,
    doc: "only 1: tune shards parameters, gradients and optimizer state over the processes " +
      "(ZeRO-3 / FSDP-style data parallel) instead of splitting layers (tensor parallel)",
  },
  tensor_parallel_plan: {
    type: "any",
    default: null,
    doc: "a tensor-parallel plan; it has no use while tensor_parallel_dim is 1",
  },
  data_parallel_shard_dim: {
    type: "int",
    default: -1,
    doc: "-1 or the number of processes: every process holds a shard (tune's sharded recipes)",
  },
  data_parallel_replicate_dim: {
    type: "int",
    default: 1,
    doc: "only 1: no replicated shard groups (HSDP); every process holds one shard",
  },
  profiler: {
    type: "component",
    kind: "profiler",
    default: null,
    doc: "torchtune.training.setup_torch_profiler: per-op traces of scheduled steps " +
      "(src/training/profiler.ts)",
  },
  low_cpu_ram: {
    type: "bool",
    default: false,
    doc: "only False: tune has no reduced-RAM loading mode (it reads the checkpoint into the " +
      "parameter buffers once, on every process)",
  },
  fsdp: {
    type: "section",
    doc: "torchtune's FSDP options",
    params: {
      cpu_offload: {
        type: "bool",
        default: false,
        doc: "only False here: host state is the top-level fsdp_cpu_offload",
      },
    },
  },
} as const satisfies ParamSchema;

/** A recipe's params with the run keys added after its own (its own declaration wins). */
export function withRunKeys<S extends ParamSchema>(params: S): S & typeof RUN_KEYS {
  const added = Object.entries(RUN_KEYS).filter(([k]) => !Object.hasOwn(params, k));
  return { ...params, ...Object.fromEntries(added) } as S & typeof RUN_KEYS;
}

/**
 * Refuse, in one line, the run-key values tune cannot honour. `worldSize` is the number of
 * processes the run will have, or null where it is not known yet (tune validate).
 */
export function checkRunKeys(config: Record<string, unknown>, worldSize: number | null): void {
  // The profiler section is built here so a setting it refuses fails before the run.
  if (config.profiler) instantiate(config.profiler as ComponentSection);
  if (config.low_cpu_ram === true) {
    throw new TuneError(
      "low_cpu_ram=True is not supported: tune reads the checkpoint into the parameter " +
        "buffers on every process; set low_cpu_ram=False",
    );
  }
  const fsdp = config.fsdp as { cpu_offload?: boolean } | null | undefined;
  if (fsdp?.cpu_offload === true) {
    throw new TuneError(
      "fsdp.cpu_offload=True is not supported: tune reads the top-level key; set " +
        "fsdp.cpu_offload=False and fsdp_cpu_offload=True",
    );
  }
  const tp = config.tensor_parallel_dim;
  if (typeof tp === "number" && tp !== 1) {
    throw new TuneError(
      `tensor_parallel_dim=${tp} is not supported: tune splits no layers across processes; it ` +
        `shards parameters, gradients and optimizer state over them (ZeRO-3). Remove the key or ` +
        `set tensor_parallel_dim=1 and run the distributed recipe on ${tp} or more processes`,
    );
  }
  const replicate = config.data_parallel_replicate_dim;
  if (typeof replicate === "number" && replicate !== 1) {
    throw new TuneError(
      `data_parallel_replicate_dim=${replicate} is not supported (no HSDP replica groups); ` +
        `set it to 1: every process holds one shard`,
    );
  }
  const shard = config.data_parallel_shard_dim;
  if (worldSize !== null && typeof shard === "number" && shard !== -1 && shard !== worldSize) {
    throw new TuneError(
      `data_parallel_shard_dim=${shard} does not match the ${worldSize} process(es) of this run; ` +
        `set it to -1 (all processes) or ${worldSize}`,
    );
  }
}

/** Current level of tune's own stderr messages (see `log_level`). */
let level: (typeof LOG_LEVELS)[number] = "INFO";

/** Set the level from a config's `log_level`. */
export function setLogLevel(name: string | null | undefined): void {
  const upper = (name ?? "INFO").toUpperCase();
  level = (LOG_LEVELS as readonly string[]).includes(upper)
    ? upper as (typeof LOG_LEVELS)[number]
    : "INFO";
}

const RANK: Record<string, number> = {
  DEBUG: 10,
  INFO: 20,
  WARNING: 30,
  WARN: 30,
  ERROR: 40,
  CRITICAL: 50,
};

/** Whether a message of `at` is shown at the current level. */
export function logs(at: "DEBUG" | "INFO" | "WARNING"): boolean {
  return RANK[at] >= RANK[level];
}
