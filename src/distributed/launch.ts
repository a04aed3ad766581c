/**
 * The launcher behind `tune --nnodes N --nproc_per_node M <recipe> ...`: like torchrun, it
 * starts one process per local device, running the same `tune` with the recipe's
 * arguments and torchrun's environment variables (RANK, LOCAL_RANK, WORLD_SIZE,
 * LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR, MASTER_PORT), so a recipe cannot tell it from
 * torchrun, SLURM or mpirun (see env.ts).
 *
 * - GPUs: every child sees all GPUs and opens device LOCAL_RANK (`cudaDeviceOrdinal`),
 *   as under torchrun; this keeps NCCL's view of the node's topology (NVLink, P2P).
 *   Where a scheduler pins one GPU per process instead, the child opens device 0.
 * - Output: each child's lines go to the launcher's stdout/stderr whole; lines of ranks
 *   other than 0 start with "[rankN] ". Recipes print progress on rank 0 only.
 * - Failure: when a child exits non-zero or is killed, the launcher names it, sends
 *   SIGTERM to the others (SIGKILL after a grace period) and exits with that child's
 *   status (128 + signal number for a signal). SIGINT/SIGTERM to the launcher reach every
 *   child.
 */
import { TuneError } from "../errors.ts";

/** Where and how many processes to start (torchrun's flags). */
export interface LaunchConfig {
  /** Number of nodes (--nnodes). */
  nnodes: number;
  /** Processes on this node, one per device (--nproc_per_node). */
  nprocPerNode: number;
  /** This node's index (--node_rank). */
  nodeRank: number;
  /** Host of node 0, where rank 0 serves the rendezvous store (--master_addr). */
  masterAddr: string;
  /** Port of the rendezvous store (--master_port). */
  masterPort: number;
}

/** Options of `launch`. */
export interface LaunchExtras {
  /** Program and leading arguments of each child (default: this tune, see `selfCommand`). */
  command?: string[];
  /** Extra environment variables for the children. */
  env?: Record<string, string>;
  /** Where children's stdout lines go (default: this process's stdout). */
  stdout?: (line: string) => void;
  /** Where children's stderr lines and the launcher's notes go (default: stderr). */
  stderr?: (line: string) => void;
  /** ms between SIGTERM and SIGKILL when stopping the other children (default 5000). */
  graceMs?: number;
}

/** Whether launcher flags ask for more than one process in the whole job. */
export function needsLaunch(cfg: LaunchConfig): boolean {
  return cfg.nnodes * cfg.nprocPerNode > 1;
}

/**
 * The command that starts this same program again: the executable alone for a compiled
 * `tune` (`deno compile`: Deno.execPath() is tune itself), else `deno run <flags> <main
 * module>`. The flags are "-A" unless TUNE_DENO_FLAGS (space-separated) says otherwise,
 * since the parent's own run flags cannot be read back.
 */
export function selfCommand(rt: Runtime = currentRuntime()): string[] {
  if (rt.standalone) return [rt.execPath];
  const main = rt.mainModule;
  const script = main.startsWith("file:") ? decodeURIComponent(new URL(main).pathname) : main;
  const flags = (rt.denoFlags ?? "-A").split(/\s+/).filter((f) => f);
  return [rt.execPath, "run", ...flags, script];
}

/** What `selfCommand` looks at (this process's by default). */
export interface Runtime {
  /** True inside a `deno compile`d executable. */
  standalone: boolean;
  /** The running executable: deno, or the compiled tune. */
  execPath: string;
  /** URL of the entry module. */
  mainModule: string;
  /** TUNE_DENO_FLAGS. */
  denoFlags?: string;
}

function currentRuntime(): Runtime {
  return {
    standalone: Deno.build.standalone,
    execPath: Deno.execPath(),
    mainModule: Deno.mainModule,
    denoFlags: Deno.env.get("TUNE_DENO_FLAGS"),
  };
}

/** The environment variables of local rank `localRank` (torchrun's set). */
export function rankEnv(cfg: LaunchConfig, localRank: number): Record<string, string> {
  const rank = cfg.nodeRank * cfg.nprocPerNode + localRank;
  return {
    RANK: String(rank),
    LOCAL_RANK: String(localRank),
    WORLD_SIZE: String(cfg.nnodes * cfg.nprocPerNode),
    LOCAL_WORLD_SIZE: String(cfg.nprocPerNode),
    GROUP_RANK: String(cfg.nodeRank),
    ROLE_RANK: String(rank),
    MASTER_ADDR: cfg.masterAddr,
    MASTER_PORT: String(cfg.masterPort),
    TUNE_LAUNCHED: "1",
  };
}

interface Child {
  rank: number;
  proc: Deno.ChildProcess;
  status: Deno.CommandStatus | null;
  killedByUs: boolean;
  pumps: Promise<void>[];
}

/**
 * Start this node's processes running `argv` (e.g. ["run", "lora_finetune_distributed",
 * "--config", "..."]) and wait for them. Resolves to the exit status for the launcher:
 * 0 when every child succeeded, else the first failed child's status.
 * @throws TuneError on inconsistent flags.
 */
export async function launch(
  cfg: LaunchConfig,
  argv: readonly string[],
  extras: LaunchExtras = {},
): Promise<number> {
  checkConfig(cfg);
  const out = extras.stdout ?? lineWriter(Deno.stdout);
  const err = extras.stderr ?? lineWriter(Deno.stderr);
  const graceMs = extras.graceMs ?? 5000;
  // One node: the port only joins this launcher's own children, so torchrun's default
  // (29500) becomes a free port the system picks, as torchrun --standalone does: two jobs
  // (or test runs) on one machine never race for 29500. Another port given is kept when free.
  const masterPort = cfg.nnodes !== 1
    ? cfg.masterPort
    : cfg.masterPort === DEFAULT_MASTER_PORT
    ? systemFreePort(cfg.masterAddr)
    : freeOrOther(cfg.masterAddr, cfg.masterPort, err);
  const job = { ...cfg, masterPort };
  const [program, ...lead] = extras.command ?? selfCommand();

  const children: Child[] = [];
  let settle: (c: Child) => void = () => {};
  const firstFailure = new Promise<Child>((r) => (settle = r));
  for (let local = 0; local < cfg.nprocPerNode; local++) {
    const rank = cfg.nodeRank * cfg.nprocPerNode + local;
    const proc = new Deno.Command(program, {
      args: [...lead, ...argv],
      env: { ...extras.env, ...rankEnv(job, local) },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const prefix = rank === 0 ? "" : `[rank${rank}] `;
    const child: Child = {
      rank,
      proc,
      status: null,
      killedByUs: false,
      pumps: [pumpLines(proc.stdout, prefix, out), pumpLines(proc.stderr, prefix, err)],
    };
    children.push(child);
    proc.status.then((s) => {
      child.status = s;
      if (!s.success && !child.killedByUs) settle(child);
    });
  }

  const stopAll = (signal: Deno.Signal) => {
    for (const c of children) {
      if (c.status !== null) continue;
      c.killedByUs = true;
      try {
        c.proc.kill(signal);
      } catch { /* already gone */ }
    }
  };
  const onSignal = () => stopAll("SIGTERM");
  const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) Deno.addSignalListener(s, onSignal);

  const allDone = Promise.all(children.map((c) => c.proc.status));
  try {
    const first = await Promise.race([firstFailure, allDone.then(() => null)]);
    if (first === null) {
      await Promise.all(children.flatMap((c) => c.pumps));
      const bad = children.find((c) => !c.status!.success);
      return bad ? exitStatus(bad.status!) : 0;
    }
    // Exits seen in the same moment may arrive in any order: let them land, then blame the
    // most telling one (a signal, then an unusual status) over ranks that merely noticed
    // the loss and exited 1. When the first is such a rank, the lost one's own status can
    // come later on a loaded machine: wait for it up to a second (or until all have exited).
    let wait: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      allDone,
      new Promise((r) => (wait = setTimeout(r, severity(first.status!) === 0 ? 1000 : 0))),
    ]);
    clearTimeout(wait);
    const failed = children.filter((c) => c.status && !c.status.success && !c.killedByUs);
    const culprit = failed.sort((a, b) => severity(b.status!) - severity(a.status!))[0] ?? first;
    const running = children.filter((c) => c.status === null).length;
    err(
      `tune: rank ${culprit.rank} (pid ${culprit.proc.pid}) ${describe(culprit.status!)}` +
        (running ? `; stopping the other ${running > 1 ? `${running} ranks` : "rank"}` : ""),
    );
    stopAll("SIGTERM");
    const timer = setTimeout(() => stopAll("SIGKILL"), graceMs);
    await allDone;
    clearTimeout(timer);
    await Promise.all(children.flatMap((c) => c.pumps));
    return exitStatus(culprit.status!);
  } finally {
    for (const s of signals) Deno.removeSignalListener(s, onSignal);
  }
}

function checkConfig(cfg: LaunchConfig): void {
  if (!(cfg.nnodes >= 1 && cfg.nprocPerNode >= 1)) {
    throw new TuneError(`--nnodes and --nproc_per_node must be at least 1`);
  }
  if (!(cfg.nodeRank >= 0 && cfg.nodeRank < cfg.nnodes)) {
    throw new TuneError(`--node_rank ${cfg.nodeRank} must be below --nnodes ${cfg.nnodes}`);
  }
}

/** torchrun's default rendezvous port. */
const DEFAULT_MASTER_PORT = 29500;

/** A port free on every interface now, chosen by the system (ephemeral range). */
function systemFreePort(host: string): number {
  const hostname = host.includes(":") ? "::" : "0.0.0.0";
  const l = Deno.listen({ hostname, port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/**
 * On one node the rendezvous port only has to be free here: when it is taken (another
 * job on the default 29500), take a free one instead of failing.
 */
function freeOrOther(host: string, port: number, note: (line: string) => void): number {
  // Probe the way rank 0's store will listen (every interface; see process_group.ts).
  const hostname = host.includes(":") ? "::" : "0.0.0.0";
  try {
    Deno.listen({ hostname, port }).close();
    return port;
  } catch (e) {
    if (!(e instanceof Deno.errors.AddrInUse)) return port;
    const l = Deno.listen({ hostname, port: 0 });
    const free = l.addr.port;
    l.close();
    note(`tune: port ${port} is in use; the rendezvous uses port ${free} instead`);
    return free;
  }
}

function severity(s: Deno.CommandStatus): number {
  if (s.signal !== null) return 2;
  return s.code === 1 ? 0 : 1;
}

function describe(s: Deno.CommandStatus): string {
  return s.signal !== null ? `was killed by ${s.signal}` : `exited with status ${s.code}`;
}

const SIGNAL_NUMBERS: Partial<Record<Deno.Signal, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGABRT: 6,
  SIGKILL: 9,
  SIGSEGV: 11,
  SIGPIPE: 13,
  SIGTERM: 15,
};

/** A process's status as a shell reports it: the code, or 128 + signal number. */
function exitStatus(s: Deno.CommandStatus): number {
  if (s.signal !== null) return 128 + (SIGNAL_NUMBERS[s.signal] ?? 0);
  return s.code;
}

/** Copy a child's stream to `write` line by line, each line with `prefix`. */
async function pumpLines(
  stream: ReadableStream<Uint8Array>,
  prefix: string,
  write: (line: string) => void,
): Promise<void> {
  let pending = "";
  try {
    for await (const text of stream.pipeThrough(new TextDecoderStream())) {
      pending += text;
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        write(prefix + pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
    }
  } catch {
    // the child's pipe broke; whatever it printed is out
  }
  if (pending) write(prefix + pending);
}

/** Write whole lines to a file with one write each, so ranks' lines never interleave. */
function lineWriter(file: { writeSync(p: Uint8Array): number }): (line: string) => void {
  const enc = new TextEncoder();
  return (line) => {
    const bytes = enc.encode(line + "\n");
    let done = 0;
    while (done < bytes.length) done += file.writeSync(bytes.subarray(done));
  };
}
