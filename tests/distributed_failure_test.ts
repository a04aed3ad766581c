/**
 * A lost rank stops the others with a message naming it, instead of hanging. Each case
 * starts 3 ranks on loopback; rank 1 misbehaves in the 4th all-reduce. Bounds: every
 * survivor must leave the failing collective within 30 s (a hang: after the 10 s
 * TUNE_DIST_TIMEOUT the test sets); every process is SIGKILLed after 90 s whatever happens.
 */
import {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  ok as assert,
} from "node:assert/strict";
import { type RankResult, spawnRanks } from "./distributed/spawn.ts";

const VICTIM = 1;

async function survivors(mode: string, env: Record<string, string> = {}): Promise<RankResult[]> {
  const procs = spawnRanks("./fail_worker.ts", 3, {
    args: [mode, String(VICTIM)],
    env,
    limitMs: 90_000,
  });
  const others = await Promise.all(procs.filter((p) => p.rank !== VICTIM).map((p) => p.done));
  // A hung victim is still alive: stop it (the launcher would).
  try {
    procs[VICTIM].child.kill("SIGKILL");
  } catch { /* already gone */ }
  await procs[VICTIM].done;
  for (const r of others) {
    assert(r.code !== 0, `rank ${r.rank} should fail:\n${r.stdout}${r.stderr}`);
    assertMatch(r.stdout, /waiting/, `rank ${r.rank} reached the collective`);
    const waited = Number(/left the collective after (\d+) ms/.exec(r.stdout)?.[1]);
    assert(waited < 30_000, `rank ${r.rank} took ${waited} ms to notice`);
  }
  return others;
}

Deno.test("`allReduceSum` fails naming the rank when that rank exits with an error", async () => {
  for (const r of await survivors("exit")) {
    assertMatch(r.stderr, /rank 1 was lost: .*\[lostRank=1\]/);
  }
});

Deno.test("`allReduceSum` fails naming the rank when that rank is killed by SIGKILL", async () => {
  for (const r of await survivors("sigkill")) {
    assertMatch(r.stderr, /rank 1 was lost: .*\[lostRank=1\]/);
  }
});

Deno.test("`allReduceSum` times out naming the rank when that rank hangs", async () => {
  for (const r of await survivors("hang", { TUNE_DIST_TIMEOUT: "10" })) {
    assertMatch(r.stderr, /rank 1 did not respond within 10 s in allReduceSum.*\[lostRank=1\]/);
  }
});

Deno.test("collectives fail on every rank when ranks call different collectives", async () => {
  for (const r of await survivors("mismatch")) {
    assertMatch(r.stderr, /ranks called collectives in different orders/);
  }
});

Deno.test("`allReduceSum` fails naming the rank when that rank already closed its group", async () => {
  const others = await survivors("finish");
  for (const r of others) {
    assertMatch(r.stderr, /rank 1 already left the process group.*\[lostRank=1\]/);
  }
  assertEquals(others.length, 2);
});

Deno.test("a collective completes when its data arrived before the sender exited", async () => {
  for (const r of await survivors("sendexit")) {
    assertMatch(r.stdout, /received the broadcast/);
    assertMatch(r.stderr, /rank 1 was lost: .*\[lostRank=1\]/);
  }
});

Deno.test("`initProcessGroup()` fails naming the rank that never joined", async () => {
  const procs = spawnRanks("./fail_worker.ts", 3, {
    args: ["absent", "2"],
    env: { TUNE_DIST_INIT_TIMEOUT: "10" },
    limitMs: 90_000,
  });
  const results = await Promise.all(procs.map((p) => p.done));
  assertEquals(results[2].code, 3);
  for (const r of results.slice(0, 2)) {
    assert(r.code !== 0, `rank ${r.rank} should fail`);
    assertMatch(r.stderr, /waited 10 s for rank 2 to connect.*\[lostRank=2\]/);
  }
});

Deno.test("a rank that times out tells the others which rank was lost", async () => {
  // Rank 0 gives up on the hung rank 1 after 5 s; rank 2 would wait 120 s, so it can only
  // name rank 1 because rank 0 told it (rank 0's own exit would otherwise be blamed).
  const procs = spawnRanks("./fail_worker.ts", 3, {
    args: ["hang", "1"],
    rankEnv: (rank) => ({ TUNE_DIST_TIMEOUT: rank === 0 ? "5" : "120" }),
    limitMs: 90_000,
  });
  const [r0, r2] = await Promise.all([procs[0].done, procs[2].done]);
  procs[1].child.kill("SIGKILL");
  await procs[1].done;
  assertMatch(r0.stderr, /rank 1 did not respond within 5 s.*\[lostRank=1\]/);
  assertMatch(
    r2.stderr,
    /rank 1 did not respond within 5 s .*\[reported by rank 0\] \[lostRank=1\]/,
  );
  const waited = Number(/left the collective after (\d+) ms/.exec(r2.stdout)?.[1]);
  assert(waited < 60_000, `rank 2 took ${waited} ms`);
});
