/**
 * One rank of the NCCL test (needs a GPU per rank and libnccl). Runs every collective on
 * CUDA buffers holding small integers, whose sums are exact in any order and in bf16, and
 * checks them exactly; prints "rank R ok" or exits 1 with the reason.
 */
import { createCudaBackend } from "../../src/backend/cuda/backend.ts";
import type { DType } from "../../src/backend/ops.ts";
import { NcclCollectives } from "../../src/backend/cuda/nccl_collectives.ts";
import { initProcessGroup } from "../../src/distributed/process_group.ts";

function same(label: string, got: ArrayLike<number>, want: ArrayLike<number>): void {
  if (got.length !== want.length) {
    throw new Error(`${label}: length ${got.length} != ${want.length}`);
  }
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== want[i]) throw new Error(`${label}: element ${i} is ${got[i]}, want ${want[i]}`);
  }
}

try {
  const group = await initProcessGroup();
  const nccl = new NcclCollectives(group);
  const backend = createCudaBackend({ collectives: nccl });
  await nccl.init();
  const W = group.worldSize, me = group.rank;
  const coll = backend.collectives;
  const make = (a: Float32Array, dtype: DType = "f32") => {
    const b = backend.alloc(a.length, dtype);
    backend.upload(b, a);
    return b;
  };
  const vals = (r: number, n: number) =>
    Float32Array.from({ length: n }, (_, i) => (r + 1) * (i % 17));

  for (const dtype of ["f32", "bf16"] as DType[]) {
    const n = 100_003;
    const b = make(vals(me, n), dtype);
    await coll.allReduceSum(b);
    same(
      `allReduceSum ${dtype}`,
      backend.download(b),
      vals(0, n).map((v) => v * (W * (W + 1)) / 2),
    );
  }
  const n = 4096;
  const out = backend.alloc(n);
  await coll.reduceScatterSum(out, make(vals(me, W * n)));
  const full = vals(0, W * n).map((v) => v * (W * (W + 1)) / 2);
  same("reduceScatterSum", backend.download(out), full.subarray(me * n, (me + 1) * n));
  const gathered = backend.alloc(W * 1000);
  await coll.allGather(gathered, make(vals(me, 1000)));
  const wantGather = new Float32Array(W * 1000);
  for (let r = 0; r < W; r++) wantGather.set(vals(r, 1000), r * 1000);
  same("allGather", backend.download(gathered), wantGather);
  for (let root = 0; root < W; root++) {
    const b = make(vals(me, 513));
    await coll.broadcast(b, root);
    same(`broadcast root=${root}`, backend.download(b), vals(root, 513));
  }
  await coll.barrier();
  nccl.destroy();
  await group.close();
  console.log(`rank ${me} ok`);
} catch (e) {
  console.error(`rank ${Deno.env.get("RANK")} failed: ${(e as Error).message}`);
  Deno.exit(1);
}
