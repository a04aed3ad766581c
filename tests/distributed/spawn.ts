/** Test helpers: start N ranks of a script on loopback and collect their output. */

/** A free TCP port on 127.0.0.1 (listen on port 0, note the port, close). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

/** What one finished rank left behind. */
export interface RankResult {
  rank: number;
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
  /** ms from start to exit. */
  elapsedMs: number;
}

/** A started rank. */
export interface RankProcess {
  rank: number;
  child: Deno.ChildProcess;
  /** Resolves when the process exits (killed with SIGKILL after `limitMs`). */
  done: Promise<RankResult>;
}

/** Start `worldSize` processes running `script` with torchrun's variables on loopback. */
export function spawnRanks(
  script: string,
  worldSize: number,
  opts: {
    args?: string[];
    env?: Record<string, string>;
    /** Extra variables for one rank. */
    rankEnv?: (rank: number) => Record<string, string>;
    limitMs?: number;
  } = {},
): RankProcess[] {
  const port = freePort();
  const start = Date.now();
  const procs: RankProcess[] = [];
  for (let rank = 0; rank < worldSize; rank++) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(script, import.meta.url).pathname, ...(opts.args ?? [])],
      env: {
        RANK: String(rank),
        LOCAL_RANK: String(rank),
        WORLD_SIZE: String(worldSize),
        LOCAL_WORLD_SIZE: String(worldSize),
        MASTER_ADDR: "127.0.0.1",
        MASTER_PORT: String(port),
        NO_COLOR: "1",
        ...opts.env,
        ...opts.rankEnv?.(rank),
      },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // A bound on every test: nothing may hang forever, however loaded the machine.
    const limit = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, opts.limitMs ?? 180_000);
    const done = child.output().then((out) => {
      clearTimeout(limit);
      return {
        rank,
        code: out.code,
        signal: out.signal,
        stdout: new TextDecoder().decode(out.stdout),
        stderr: new TextDecoder().decode(out.stderr),
        elapsedMs: Date.now() - start,
      };
    });
    procs.push({ rank, child, done });
  }
  return procs;
}

/** Wait for every rank to finish. */
export async function waitAll(procs: RankProcess[]): Promise<RankResult[]> {
  return await Promise.all(procs.map((p) => p.done));
}
