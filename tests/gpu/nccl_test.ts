/**
 * GPU checks, NCCL at world size 1 (ffi/nccl.ts through src/backend/cuda/nccl_collectives.ts):
 * the bindings and every collective on one rank. Runs under `deno test` when a GPU answers and
 * from scripts/gpu_check.ts.
 */
import { ncclUniqueId } from "../../ffi/nccl.ts";
import { roundArrayBf16 } from "../../src/backend/cpu/buffer.ts";
import { createCudaBackend } from "../../src/backend/cuda/backend.ts";
import { TuneError } from "../../src/errors.ts";
import { cmpArrays, EXACT, gpuTest, randn, results, selected, selfTest } from "./_harness.ts";

// ---- NCCL at world size 1 --------------------------------------------------------------------

/** src/backend/cuda/nccl_collectives.ts on a communicator of one rank (bindings, calls). */
export async function ncclChecks(): Promise<void> {
  const name = "NCCL collectives at world size 1 (distributed NcclCollectives)";
  if (selfTest || !selected("NCCL")) return;
  const t0 = performance.now();
  try {
    try {
      ncclUniqueId();
    } catch (e) {
      if (e instanceof TuneError) {
        console.log(`skip  ${name}: ${e.message}`);
        return;
      }
      throw e;
    }
    const { initProcessGroup } = await import("../../src/distributed/process_group.ts");
    const { NcclCollectives } = await import("../../src/backend/cuda/nccl_collectives.ts");
    const group = await initProcessGroup();
    const nccl = new NcclCollectives(group);
    const be = createCudaBackend({ collectives: nccl });
    await nccl.init();
    const n = 4099;
    const host = randn(n);
    const a = be.alloc(n, "f32"), b = be.alloc(n, "bf16"), o = be.alloc(n, "f32");
    be.upload(a, host);
    be.upload(b, host);
    await nccl.allReduceSum(a);
    await nccl.allReduceSum(b);
    await nccl.broadcast(a, 0);
    await nccl.allGather(o, a);
    const wantBf = host.slice();
    roundArrayBf16(wantBf, host);
    const out = [
      cmpArrays("allReduceSum f32", be.download(a), host, EXACT),
      cmpArrays("allReduceSum bf16", be.download(b), wantBf, EXACT),
      cmpArrays("allGather", be.download(o), host, EXACT),
    ];
    be.fill(o, 0);
    await nccl.reduceScatterSum(o, a);
    await nccl.barrier();
    out.push(cmpArrays("reduceScatterSum", be.download(o), host, EXACT));
    nccl.destroy();
    be.destroy();
    await group.close();
    const ok = out.every((x) => x.ok);
    results.push({ name, ok });
    const body = out.map((x) => `${x.label}: ${x.detail}`).join("; ");
    const ms = (performance.now() - t0).toFixed(0);
    console.log(`${ok ? "PASS" : "FAIL"}  ${name} ${body}  [${ms} ms]`);
  } catch (e) {
    results.push({ name, ok: false });
    console.log(`FAIL  ${name} error: ${e instanceof Error ? (e.stack ?? e.message) : e}`);
  }
}

gpuTest("NCCL at world size 1", ncclChecks);
