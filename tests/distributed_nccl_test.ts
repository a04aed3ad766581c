/**
 * NCCL collectives on real GPUs: one rank per GPU (up to 2; a single GPU still checks the
 * bindings, the unique-id exchange and every call on a communicator of one). Exact
 * comparison (integer-valued data). Runs only where libcuda, a GPU and libnccl are present.
 */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { spawnRanks, waitAll } from "./distributed/spawn.ts";

function gpuCount(): number {
  try {
    const lib = Deno.dlopen(Deno.env.get("TUNE_LIBCUDA") ?? "libcuda.so.1", {
      cuInit: { parameters: ["u32"], result: "i32" },
      cuDeviceGetCount: { parameters: ["buffer"], result: "i32" },
    });
    const n = new Int32Array(1);
    const ok = lib.symbols.cuInit(0) === 0 && lib.symbols.cuDeviceGetCount(n) === 0;
    lib.close();
    return ok ? n[0] : 0;
  } catch {
    return 0;
  }
}

async function ncclPresent(): Promise<boolean> {
  try {
    const { nccl } = await import("../ffi/nccl.ts");
    nccl();
    return true;
  } catch {
    return false;
  }
}

const GPUS = gpuCount();
const HAS_NCCL = GPUS > 0 && await ncclPresent();

Deno.test("`NcclCollectives` gives exact results with one rank per GPU", {
  ignore: !HAS_NCCL,
}, async () => {
  const W = Math.min(GPUS, 2);
  const results = await waitAll(spawnRanks("./nccl_worker.ts", W, { limitMs: 300_000 }));
  for (const r of results) {
    assertEquals(r.code, 0, `rank ${r.rank}:\n${r.stderr}${r.stdout}`);
    assertEquals(r.stdout.trim(), `rank ${r.rank} ok`);
  }
});
