/**
 * Rank discovery: who this process is in the job, from the environment a launcher set.
 *
 * Launchers, in order of precedence:
 * - torchrun and `tune --nproc_per_node` (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
 *   GROUP_RANK, MASTER_ADDR, MASTER_PORT);
 * - Open MPI's mpirun (OMPI_COMM_WORLD_RANK, _LOCAL_RANK, _SIZE, _LOCAL_SIZE) and
 *   MPICH/Intel MPI's (PMI_RANK, PMI_SIZE, MPI_LOCALRANKID, MPI_LOCALNRANKS); MASTER_ADDR
 *   must name rank 0's host unless every rank is on one node;
 * - SLURM's srun (SLURM_PROCID, SLURM_LOCALID, SLURM_STEP_NUM_TASKS or SLURM_NTASKS,
 *   SLURM_NODEID, tasks per node); the master is MASTER_ADDR, else the first host of the
 *   step's node list (where task 0 runs), else SLURM_LAUNCH_NODE_IPADDR; the port is
 *   MASTER_PORT, else derived from SLURM_JOB_ID so that jobs sharing a node differ.
 * Without any of them the process is a job of one.
 */
import { TuneError } from "../errors.ts";

/** Where the rank came from. */
export type RankSource = "torchrun" | "mpi" | "slurm" | "single";

/** This process's place in the job. */
export interface RankInfo {
  /** Global rank, 0 .. worldSize-1. */
  rank: number;
  /** Rank among the processes on this node (selects the GPU). */
  localRank: number;
  worldSize: number;
  /** Processes on this node. */
  localWorldSize: number;
  /** Index of this node. */
  nodeRank: number;
  /** Host of rank 0, which serves the rendezvous store. */
  masterAddr: string;
  masterPort: number;
  source: RankSource;
}

/** Environment variables as a plain record (Deno.env.toObject() by default). */
export type Env = Record<string, string | undefined>;

/** torchrun's default rendezvous port. */
export const DEFAULT_MASTER_PORT = 29500;

/** The default deadline of every distributed wait, in ms (TUNE_DIST_TIMEOUT overrides). */
export const DEFAULT_TIMEOUT_MS = 120_000;

/** The default deadline for all ranks to start and meet (TUNE_DIST_INIT_TIMEOUT overrides). */
export const DEFAULT_INIT_TIMEOUT_MS = 300_000;

/**
 * Read this process's rank, world size and rendezvous address from the environment.
 * @throws TuneError naming the variable when a launcher's variables are malformed.
 */
export function discoverRank(env: Env = Deno.env.toObject()): RankInfo {
  if (env.RANK !== undefined && env.WORLD_SIZE !== undefined) return fromTorchrun(env);
  if (env.OMPI_COMM_WORLD_RANK !== undefined && env.OMPI_COMM_WORLD_SIZE !== undefined) {
    return fromMpi(env, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", {
      localRank: "OMPI_COMM_WORLD_LOCAL_RANK",
      localSize: "OMPI_COMM_WORLD_LOCAL_SIZE",
    });
  }
  if (env.PMI_RANK !== undefined && env.PMI_SIZE !== undefined) {
    return fromMpi(env, "PMI_RANK", "PMI_SIZE", {
      localRank: "MPI_LOCALRANKID",
      localSize: "MPI_LOCALNRANKS",
    });
  }
  if (env.SLURM_PROCID !== undefined && (env.SLURM_STEP_NUM_TASKS ?? env.SLURM_NTASKS)) {
    return fromSlurm(env);
  }
  return {
    rank: 0,
    localRank: 0,
    worldSize: 1,
    localWorldSize: 1,
    nodeRank: 0,
    masterAddr: env.MASTER_ADDR ?? "127.0.0.1",
    masterPort: port(env, DEFAULT_MASTER_PORT),
    source: "single",
  };
}

/**
 * The deadline of distributed waits: TUNE_DIST_TIMEOUT seconds, else `DEFAULT_TIMEOUT_MS`.
 * @throws TuneError when TUNE_DIST_TIMEOUT is not a positive number.
 */
export function distTimeoutMs(env: Env = Deno.env.toObject()): number {
  return seconds(env, "TUNE_DIST_TIMEOUT", DEFAULT_TIMEOUT_MS);
}

/**
 * The deadline for every rank to start and join the group (processes start slowly on a
 * loaded machine): TUNE_DIST_INIT_TIMEOUT seconds, else `DEFAULT_INIT_TIMEOUT_MS`.
 * @throws TuneError when TUNE_DIST_INIT_TIMEOUT is not a positive number.
 */
export function distInitTimeoutMs(env: Env = Deno.env.toObject()): number {
  return seconds(env, "TUNE_DIST_INIT_TIMEOUT", DEFAULT_INIT_TIMEOUT_MS);
}

function seconds(env: Env, name: string, fallbackMs: number): number {
  const v = env[name];
  if (v === undefined || v === "") return fallbackMs;
  const s = Number(v);
  if (!(s > 0)) throw new TuneError(`${name}=${v} is not a positive number of seconds`);
  return s * 1000;
}

/**
 * The CUDA device ordinal this rank should open, given how many devices it can see:
 * LOCAL_RANK when it sees every GPU of the node (torchrun and `tune --nproc_per_node`
 * style), device 0 when the launcher pinned one GPU per process (e.g. srun
 * --gpus-per-task=1 sets CUDA_VISIBLE_DEVICES).
 * @throws TuneError when there are fewer visible devices than local ranks.
 */
export function cudaDeviceOrdinal(info: RankInfo, deviceCount: number): number {
  if (deviceCount === 1) return 0;
  if (info.localRank < deviceCount) return info.localRank;
  throw new TuneError(
    `local rank ${info.localRank} needs GPU ${info.localRank} but only ${deviceCount} are ` +
      `visible; start at most ${deviceCount} processes per node (--nproc_per_node)`,
  );
}

function int(env: Env, name: string, fallback?: number): number {
  const v = env[name];
  if (v === undefined || v === "") {
    if (fallback !== undefined) return fallback;
    throw new TuneError(`${name} is not set; the launcher's environment is incomplete`);
  }
  if (!/^\d+$/.test(v.trim())) {
    throw new TuneError(
      `${name}=${v} is not a non-negative integer; fix the launcher's environment`,
    );
  }
  return Number(v);
}

function port(env: Env, fallback: number): number {
  const p = int(env, "MASTER_PORT", fallback);
  if (p < 1 || p > 65535) throw new TuneError(`MASTER_PORT=${p} is not a TCP port (1..65535)`);
  return p;
}

function checked(info: RankInfo, vars: string): RankInfo {
  if (info.worldSize < 1) throw new TuneError(`${vars}: the world size must be at least 1`);
  if (info.rank >= info.worldSize) {
    throw new TuneError(`${vars}: rank ${info.rank} is not below world size ${info.worldSize}`);
  }
  if (info.localWorldSize < 1 || info.localRank >= info.localWorldSize) {
    throw new TuneError(
      `${vars}: local rank ${info.localRank} is not below local world size ${info.localWorldSize}`,
    );
  }
  return info;
}

function fromTorchrun(env: Env): RankInfo {
  const rank = int(env, "RANK");
  const worldSize = int(env, "WORLD_SIZE");
  const localWorldSize = int(env, "LOCAL_WORLD_SIZE", worldSize);
  return checked({
    rank,
    localRank: int(env, "LOCAL_RANK", rank % localWorldSize),
    worldSize,
    localWorldSize,
    nodeRank: int(env, "GROUP_RANK", Math.floor(rank / localWorldSize)),
    masterAddr: env.MASTER_ADDR || "127.0.0.1",
    masterPort: port(env, DEFAULT_MASTER_PORT),
    source: "torchrun",
  }, "RANK/WORLD_SIZE");
}

function fromMpi(
  env: Env,
  rankVar: string,
  sizeVar: string,
  local: { localRank: string; localSize: string },
): RankInfo {
  const rank = int(env, rankVar);
  const worldSize = int(env, sizeVar);
  const localWorldSize = int(env, local.localSize, worldSize);
  const localRank = int(env, local.localRank, rank % localWorldSize);
  let masterAddr = env.MASTER_ADDR;
  if (!masterAddr) {
    if (localWorldSize !== worldSize) {
      throw new TuneError(
        `mpirun across nodes: set MASTER_ADDR to rank 0's host (mpirun -x MASTER_ADDR=<host>)`,
      );
    }
    masterAddr = "127.0.0.1";
  }
  return checked({
    rank,
    localRank,
    worldSize,
    localWorldSize,
    nodeRank: Math.floor(rank / localWorldSize),
    masterAddr,
    masterPort: port(env, DEFAULT_MASTER_PORT),
    source: "mpi",
  }, `${rankVar}/${sizeVar}`);
}

function fromSlurm(env: Env): RankInfo {
  const rank = int(env, "SLURM_PROCID");
  const worldSize = env.SLURM_STEP_NUM_TASKS
    ? int(env, "SLURM_STEP_NUM_TASKS")
    : int(env, "SLURM_NTASKS");
  const nodeRank = int(env, "SLURM_NODEID", 0);
  const perNode = env.SLURM_STEP_TASKS_PER_NODE ?? env.SLURM_TASKS_PER_NODE;
  let localWorldSize: number;
  if (perNode) {
    const counts = expandTasksPerNode(perNode);
    if (nodeRank >= counts.length) {
      throw new TuneError(`SLURM_NODEID=${nodeRank} is beyond SLURM_TASKS_PER_NODE=${perNode}`);
    }
    localWorldSize = counts[nodeRank];
  } else {
    localWorldSize = int(env, "SLURM_NTASKS_PER_NODE", worldSize);
  }
  const nodeList = env.SLURM_STEP_NODELIST ?? env.SLURM_JOB_NODELIST ?? env.SLURM_NODELIST;
  const masterAddr = env.MASTER_ADDR || (nodeList ? firstHost(nodeList) : "") ||
    env.SLURM_LAUNCH_NODE_IPADDR || "127.0.0.1";
  const jobPort = env.SLURM_JOB_ID && /^\d+$/.test(env.SLURM_JOB_ID)
    ? 20000 + (Number(env.SLURM_JOB_ID) % 10000)
    : DEFAULT_MASTER_PORT;
  return checked({
    rank,
    localRank: int(env, "SLURM_LOCALID", rank % localWorldSize),
    worldSize,
    localWorldSize,
    nodeRank,
    masterAddr,
    masterPort: port(env, jobPort),
    source: "slurm",
  }, "SLURM_PROCID/SLURM_NTASKS");
}

/** SLURM's "2(x3),1" -> [2, 2, 2, 1]. */
export function expandTasksPerNode(spec: string): number[] {
  const out: number[] = [];
  for (const part of spec.split(",")) {
    const m = /^\s*(\d+)(?:\(x(\d+)\))?\s*$/.exec(part);
    if (!m) throw new TuneError(`cannot read SLURM tasks per node '${spec}'`);
    for (let i = 0; i < Number(m[2] ?? 1); i++) out.push(Number(m[1]));
  }
  return out;
}

/** The first host of a SLURM host list: "gpu[07-09,12],cpu1" -> "gpu07". */
export function firstHost(list: string): string {
  let depth = 0;
  let end = list.length;
  for (let i = 0; i < list.length; i++) {
    if (list[i] === "[") depth++;
    else if (list[i] === "]") depth--;
    else if (list[i] === "," && depth === 0) {
      end = i;
      break;
    }
  }
  const item = list.slice(0, end).trim();
  const open = item.indexOf("[");
  if (open < 0) return item;
  const close = item.indexOf("]", open);
  const first = item.slice(open + 1, close).split(/[,-]/)[0];
  return item.slice(0, open) + first + item.slice(close + 1);
}
