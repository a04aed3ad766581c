/**
 * CPU collectives between real processes on loopback: every rank checks each result
 * bitwise against a sequential rank-order fp32 sum (tolerance: none, bitwise), and the
 * test checks that all ranks printed identical hashes of every shared result.
 */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { spawnRanks, waitAll } from "./distributed/spawn.ts";

async function runCollectives(W: number): Promise<void> {
  const results = await waitAll(spawnRanks("./collectives_worker.ts", W));
  for (const r of results) {
    assertEquals(r.code, 0, `rank ${r.rank} exited ${r.code}:\n${r.stderr}${r.stdout}`);
  }
  const reports = results.map((r) => JSON.parse(r.stdout.trim().split("\n").at(-1)!));
  const shared = (h: Record<string, string>) =>
    Object.fromEntries(Object.entries(h).filter(([k]) => !k.startsWith("reduceScatter")));
  for (const rep of reports) {
    assertEquals(rep.worldSize, W);
    assertEquals(shared(rep.hashes), shared(reports[0].hashes), `rank ${rep.rank} differs`);
  }
  // Each rank holds a different slice after reduceScatterSum.
  const slices = new Set(reports.map((rep, r) => rep.hashes[`reduceScatter${r}`]));
  assertEquals(slices.size, W);
}

Deno.test("`TcpCollectives` gives exact, bitwise-identical results on 2 processes", async () => {
  await runCollectives(2);
});

Deno.test("`TcpCollectives` gives exact, bitwise-identical results on 3 processes", async () => {
  await runCollectives(3);
});
