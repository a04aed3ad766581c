/**
 * NCCL collectives on real GPUs: one rank per GPU (up to 2; a single GPU still checks the
 * bindings, the unique-id exchange and every call on a communicator of one). Exact
 * comparison (integer-valued data). Runs only where libcuda, a GPU and libnccl are present.
 */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { spawnRanks, waitAll } from "./distributed/spawn.ts";
import { gpuCount, ncclPresent } from "./_gpu_probe.ts";

const GPUS = gpuCount();
const HAS_NCCL = GPUS > 0 && await ncclPresent();

Deno.test(
  "`NcclCollectives` gives exact results with one rank per GPU (needs NVIDIA GPUs and NCCL)",
  {
    ignore: !HAS_NCCL,
  },
  async () => {
    const W = Math.min(GPUS, 2);
    const results = await waitAll(spawnRanks("./nccl_worker.ts", W, { limitMs: 300_000 }));
    for (const r of results) {
      assertEquals(r.code, 0, `rank ${r.rank}:\n${r.stderr}${r.stdout}`);
      assertEquals(r.stdout.trim(), `rank ${r.rank} ok`);
    }
  },
);
