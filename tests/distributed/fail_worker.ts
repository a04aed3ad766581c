/**
 * One rank of the failure tests. Usage: fail_worker.ts <mode> <victim rank>.
 * Every rank does three good all-reduces; then the victim misbehaves while the others
 * call allReduceSum:
 *   exit      the victim exits with status 3
 *   sigkill   the victim kills itself with SIGKILL
 *   hang      the victim stops calling collectives (and stays alive)
 *   mismatch  the victim calls allGather instead
 *   finish    the victim closes its group and exits 0
 *   sendexit  the victim broadcasts (needing nothing back) and exits at once without
 *             closing; the others first wait until they noticed it left, then must still
 *             receive the broadcast, and only their next collective fails
 *   absent    the victim exits before joining the group at all (start-up failure)
 * A surviving rank prints "rank R failed: <message>" on stderr and exits 1, as the CLI does.
 */
import { CpuBuffer } from "../../src/backend/cpu/buffer.ts";
import type { DeviceBuffer } from "../../src/backend/ops.ts";
import { DistributedError } from "../../src/distributed/errors.ts";
import { viewHostAccess } from "../../src/distributed/host_access.ts";
import { initProcessGroup } from "../../src/distributed/process_group.ts";

const [mode, victimArg] = Deno.args;
const victim = Number(victimArg);
if (mode === "absent" && Deno.env.get("RANK") === String(victim)) Deno.exit(3);
try {
  const group = await initProcessGroup();
  const coll = group.cpuCollectives(viewHostAccess((b: DeviceBuffer) => (b as CpuBuffer).data));
  const buf = new CpuBuffer("f32", new Float32Array(1000).fill(1), true);
  for (let i = 0; i < 3; i++) await coll.allReduceSum(buf);
  if (group.rank === victim) {
    if (mode === "exit") Deno.exit(3);
    if (mode === "sigkill") Deno.kill(Deno.pid, "SIGKILL");
    if (mode === "hang") await new Promise(() => setInterval(() => {}, 1000));
    if (mode === "finish") {
      await group.close();
      Deno.exit(0);
    }
    if (mode === "sendexit") {
      await coll.broadcast(new CpuBuffer("f32", new Float32Array(1000).fill(7), true), victim);
      Deno.exit(0);
    }
    if (mode === "mismatch") {
      await coll.allGather(
        new CpuBuffer("f32", new Float32Array(1000 * group.worldSize), true),
        buf,
      );
    }
  } else {
    if (mode === "sendexit") {
      // Not timing: wait for the event itself (the victim's connection closing).
      while (group.mesh!.failure === null) await new Promise((r) => setTimeout(r, 5));
      const got = new CpuBuffer("f32", new Float32Array(1000), true);
      await coll.broadcast(got, victim);
      if (!got.data.every((v) => v === 7)) throw new Error("broadcast data lost");
      console.log(`rank ${group.rank} received the broadcast`);
    }
    const t0 = Date.now();
    console.log(`rank ${group.rank} waiting`);
    try {
      await coll.allReduceSum(buf);
    } finally {
      console.log(`rank ${group.rank} left the collective after ${Date.now() - t0} ms`);
    }
  }
  console.log(`rank ${group.rank} finished`);
  await group.close();
} catch (e) {
  const lost = e instanceof DistributedError ? ` [lostRank=${e.lostRank}]` : "";
  console.error(`rank ${Deno.env.get("RANK")} failed: ${(e as Error).message}${lost}`);
  Deno.exit(1);
}
