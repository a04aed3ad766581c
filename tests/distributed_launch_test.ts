/**
 * The launcher: children get torchrun's variables, output arrives whole and prefixed, and
 * a failed child stops the job with its status and its rank named. Children that would
 * stay alive are stopped by the launcher itself (SIGTERM, then SIGKILL after 2 s), so no
 * test can hang on them.
 */
import {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
import { launch, type LaunchConfig, rankEnv, selfCommand } from "../src/distributed/launch.ts";
import { freePort } from "./distributed/spawn.ts";

const here = (p: string) => new URL(p, import.meta.url).pathname;
const denoRun = (script: string) => [Deno.execPath(), "run", "-A", here(script)];

interface Captured {
  code: number;
  out: string[];
  err: string[];
}

async function run(cfg: Partial<LaunchConfig>, script: string, argv: string[]): Promise<Captured> {
  const out: string[] = [], err: string[] = [];
  const code = await launch(
    {
      nnodes: 1,
      nprocPerNode: 2,
      nodeRank: 0,
      masterAddr: "127.0.0.1",
      masterPort: freePort(),
      ...cfg,
    },
    argv,
    {
      command: denoRun(script),
      env: { EXTRA: "x", NO_COLOR: "1", TUNE_DIST_TIMEOUT: "20" },
      stdout: (l) => out.push(l),
      stderr: (l) => err.push(l),
      graceMs: 2000,
    },
  );
  return { code, out, err };
}

/** The JSON report of each rank, keyed by rank, and the prefix each line carried. */
function reports(lines: string[]): Map<number, { env: Record<string, string>; args: string[] }> {
  const m = new Map();
  for (const line of lines) {
    const match = /^(\[rank(\d+)\] )?(\{.*\})$/.exec(line);
    if (!match) continue;
    const rep = JSON.parse(match[3]);
    const rank = Number(rep.env.RANK);
    // Rank 0's lines are bare, the others' carry their rank.
    assertEquals(match[2] === undefined ? 0 : Number(match[2]), rank);
    m.set(rank, rep);
  }
  return m;
}

Deno.test("`launch()` starts one child per process with torchrun's variables", async () => {
  const cfg = { nprocPerNode: 3, masterPort: freePort() };
  const r = await run(cfg, "./distributed/print_env.ts", ["run", "x", "--config", "c.yaml"]);
  assertEquals(r.code, 0, r.err.join("\n"));
  const reps = reports(r.out);
  assertEquals([...reps.keys()].sort(), [0, 1, 2]);
  for (const [rank, rep] of reps) {
    assertEquals(rep.env, {
      RANK: String(rank),
      LOCAL_RANK: String(rank),
      WORLD_SIZE: "3",
      LOCAL_WORLD_SIZE: "3",
      GROUP_RANK: "0",
      MASTER_ADDR: "127.0.0.1",
      MASTER_PORT: String(cfg.masterPort),
      TUNE_LAUNCHED: "1",
      EXTRA: "x",
    });
    assertEquals(rep.args, ["run", "x", "--config", "c.yaml"]);
  }
  assertEquals(r.err.filter((l) => l.includes("note from")).sort(), [
    "[rank1] note from rank 1",
    "[rank2] note from rank 2",
    "note from rank 0",
  ]);
});

Deno.test("`launch()` numbers ranks by node on the second of two nodes", async () => {
  const r = await run(
    { nnodes: 2, nprocPerNode: 2, nodeRank: 1, masterAddr: "10.9.8.7", masterPort: 29999 },
    "./distributed/print_env.ts",
    [],
  );
  assertEquals(r.code, 0);
  const reps = reports(r.out);
  assertEquals([...reps.keys()].sort(), [2, 3]);
  assertEquals(reps.get(3)!.env.LOCAL_RANK, "1");
  assertEquals(reps.get(3)!.env.WORLD_SIZE, "4");
  assertEquals(reps.get(3)!.env.GROUP_RANK, "1");
  assertEquals(reps.get(2)!.env.MASTER_ADDR, "10.9.8.7");
  assertEquals(reps.get(2)!.env.MASTER_PORT, "29999");
});

Deno.test("`launch()` exits with a failed child's status, names it and stops the rest", async () => {
  const r = await run({ nprocPerNode: 3 }, "./distributed/print_env.ts", [
    "--fail-rank",
    "2",
    "--how",
    "exit",
  ]);
  assertEquals(r.code, 3);
  assert(
    r.err.some((l) =>
      /^tune: rank 2 \(pid \d+\) exited with status 3; stopping the other 2 ranks$/.test(l)
    ),
    r.err.join("\n"),
  );
});

Deno.test("`launch()` reports a child killed by SIGKILL as status 137", async () => {
  const r = await run({ nprocPerNode: 3 }, "./distributed/print_env.ts", [
    "--fail-rank",
    "0",
    "--how",
    "sigkill",
  ]);
  assertEquals(r.code, 137);
  assert(
    r.err.some((l) => /^tune: rank 0 \(pid \d+\) was killed by SIGKILL/.test(l)),
    r.err.join("\n"),
  );
});

Deno.test("`launch()` runs real collectives across its children", async () => {
  const r = await run({ nprocPerNode: 3 }, "./distributed/collectives_worker.ts", []);
  assertEquals(r.code, 0, r.err.join("\n"));
  assertEquals(reportsOfWorker(r.out), 3);
});

Deno.test("`launch()` on two nodes (simulated on loopback) runs collectives over all 4 ranks", async () => {
  const masterPort = freePort();
  const [node0, node1] = await Promise.all(
    [0, 1].map((nodeRank) =>
      run(
        { nnodes: 2, nprocPerNode: 2, nodeRank, masterPort },
        "./distributed/collectives_worker.ts",
        [],
      )
    ),
  );
  assertEquals([node0.code, node1.code], [0, 0], [...node0.err, ...node1.err].join("\n"));
  assertEquals(reportsOfWorker([...node0.out, ...node1.out]), 4);
  assert(node1.out.every((l) => /^\[rank[23]\] /.test(l)), node1.out.join("\n"));
});

function reportsOfWorker(lines: string[]): number {
  const hashes = lines.map((l) => JSON.parse(l.replace(/^\[rank\d+\] /, "")).hashes.allGather);
  assertEquals(new Set(hashes).size, 1);
  return hashes.length;
}

Deno.test("`launch()` stops the job when a rank is SIGKILLed inside a collective", async () => {
  const r = await run({ nprocPerNode: 3 }, "./distributed/fail_worker.ts", ["sigkill", "1"]);
  assertEquals(r.code, 137);
  assert(
    r.err.some((l) => /^tune: rank 1 \(pid \d+\) was killed by SIGKILL/.test(l)),
    r.err.join("\n"),
  );
  // The survivors that exited before the launcher stopped them named the lost rank.
  for (const l of r.err.filter((l) => l.includes("failed:"))) assertMatch(l, /rank 1 was lost/);
});

Deno.test("`launch()` restarts this same program through `selfCommand()`", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", here("./distributed/launch_main.ts"), "launch", "2", "a", "b"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout).trim().split("\n");
  assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
  const reps = reports(stdout);
  assertEquals([...reps.keys()].sort(), [0, 1]);
  assertEquals(reps.get(1)!.args, ["a", "b"]);
});

Deno.test("`launch()` on one node moves off a rendezvous port that is taken", async () => {
  const taken = Deno.listen({ hostname: "0.0.0.0", port: 0 });
  try {
    const r = await run({ masterPort: taken.addr.port }, "./distributed/collectives_worker.ts", []);
    assertEquals(r.code, 0, r.err.join("\n"));
    assert(r.err.some((l) => l.includes(`port ${taken.addr.port} is in use`)), r.err.join("\n"));
  } finally {
    taken.close();
  }
});

Deno.test("`selfCommand()` runs a compiled tune directly and a script through deno run", () => {
  assertEquals(
    selfCommand({
      standalone: true,
      execPath: "/opt/tune",
      mainModule: "file:///tmp/deno-compile-tune/cli.ts",
    }),
    ["/opt/tune"],
  );
  assertEquals(
    selfCommand({
      standalone: false,
      execPath: "/usr/bin/deno",
      mainModule: "file:///w/my%20dir/cli.ts",
    }),
    ["/usr/bin/deno", "run", "-A", "/w/my dir/cli.ts"],
  );
  assertEquals(
    selfCommand({
      standalone: false,
      execPath: "/usr/bin/deno",
      mainModule: "file:///w/cli.ts",
      denoFlags: " --allow-all  --v8-flags=--max-old-space-size=8192",
    }),
    ["/usr/bin/deno", "run", "--allow-all", "--v8-flags=--max-old-space-size=8192", "/w/cli.ts"],
  );
});

Deno.test("`rankEnv()` and `launch()` reject inconsistent flags", async () => {
  assertEquals(
    rankEnv({ nnodes: 2, nprocPerNode: 4, nodeRank: 1, masterAddr: "h", masterPort: 1 }, 3).RANK,
    "7",
  );
  const bad = (cfg: Partial<LaunchConfig>) =>
    launch(
      { nnodes: 1, nprocPerNode: 2, nodeRank: 0, masterAddr: "127.0.0.1", masterPort: 1, ...cfg },
      [],
      {
        command: ["/bin/true"],
      },
    );
  await bad({ nodeRank: 1 }).then(
    () => assert(false),
    (e) => assertMatch(e.message, /--node_rank 1/),
  );
  await bad({ nprocPerNode: 0 }).then(
    () => assert(false),
    (e) => assertMatch(e.message, /at least 1/),
  );
});
