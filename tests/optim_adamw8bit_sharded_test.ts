/**
 * 8-bit AdamW sharded over W ranks (ShardedOptimizer + AdamW8bit.shard, as the distributed
 * recipes run it) equals the one-process AdamW8bit on the same gradients bit for bit: values,
 * codes and block absmaxes after 4 steps, for W = 2, 3, 4 and a layout whose slices cut
 * 256-value blocks (a block shared by two ranks, and one spread over three), with fp32-moment
 * tensors between; the gathered state is `exportState()`'s, and ranks that import it step on
 * bitwise like the one process. The W ranks live in this process and talk through an
 * in-memory all-gather (the 2-process TCP path is tests/recipe_qlora_distributed_test.ts).
 */
import assert from "node:assert/strict";
import type { Collectives, DeviceBuffer } from "../src/backend/ops.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import type { CpuBuffer } from "../src/backend/cpu/buffer.ts";
import { AdamW8bit } from "../src/optim/adamw8bit.ts";
import { ParamLayout } from "../src/params/layout.ts";
import type { StateDict } from "../src/params/state_dict.ts";
import { ParamStore } from "../src/params/store.ts";
import { ShardedOptimizer } from "../src/training/sharded.ts";

/** W ranks' all-gathers in one process: each call completes once every rank made it. */
class Hub {
  #parts: Float32Array[] = [];
  #waiting: (() => void)[] = [];
  constructor(readonly worldSize: number) {}

  async gather(rank: number, part: Float32Array): Promise<Float32Array[]> {
    const parts = this.#parts;
    parts[rank] = part;
    const all = new Promise<void>((res) => this.#waiting.push(res));
    if (this.#waiting.length === this.worldSize) {
      this.#waiting.forEach((f) => f());
      this.#parts = [];
      this.#waiting = [];
    }
    await all;
    return parts;
  }
}

/** All-gather over a Hub (the only collective the 8-bit step and the state gather use). */
class HubCollectives implements Collectives {
  constructor(readonly rank: number, readonly worldSize: number, readonly hub: Hub) {}
  async allGather(out: DeviceBuffer, inp: DeviceBuffer): Promise<void> {
    const parts = await this.hub.gather(this.rank, (inp as CpuBuffer).data.slice() as Float32Array);
    const o = (out as CpuBuffer).data as Float32Array;
    parts.forEach((p, r) => o.set(p, r * p.length));
  }
  allReduceSum(): Promise<void> {
    throw new Error("not used by the optimizer step");
  }
  reduceScatterSum(): Promise<void> {
    throw new Error("not used by the optimizer step");
  }
  broadcast(): Promise<void> {
    throw new Error("not used by the optimizer step");
  }
  barrier(): Promise<void> {
    throw new Error("not used by the optimizer step");
  }
}

// 8-bit tensors of 3000, 1300, 5000 and 520 elements (min_8bit_size 512), fp32 ones of 100
// and 300: slices of every W fall inside blocks; with W = 4 the last group's slices are 130
// elements long, so its second block spans three ranks
const LAYOUT = new ParamLayout([
  {
    name: "g0",
    tensors: [{ name: "a", shape: [30, 100] }, { name: "b", shape: [100] }, {
      name: "c",
      shape: [13, 100],
    }],
  },
  { name: "g1", tensors: [{ name: "d", shape: [50, 100] }, { name: "e", shape: [300] }] },
  { name: "g2", tensors: [{ name: "f", shape: [520] }] },
]);
const OPTS = {
  lr: 1e-2,
  betas: [0.9, 0.999] as [number, number],
  eps: 1e-8,
  weightDecay: 0.01,
  minBlockwiseSize: 512,
};

/** Seeded values with a magnitude that changes every 97 elements (varied block absmaxes). */
function seeded(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * (1 + ((i / 97) | 0) % 7);
  }
  return out;
}

/** Zero the layout's alignment padding (no tensor there: the optimizers leave it alone). */
function onTensors(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (const e of LAYOUT.entries) out.set(x.subarray(e.offset, e.offset + e.length), e.offset);
  return out;
}

interface Rank {
  be: CpuBackend;
  store: ParamStore;
  opt: AdamW8bit;
  sh: ShardedOptimizer;
}

function makeRanks(W: number, params: Float32Array): Rank[] {
  const hub = new Hub(W);
  return Array.from({ length: W }, (_, r) => {
    const be = new CpuBackend({ collectives: new HubCollectives(r, W, hub) });
    const store = new ParamStore(be, LAYOUT, true, "f32", false, {
      slotOf: () => 0,
      multipleOf: W,
    });
    store.materialize();
    be.upload(store.params, params);
    const opt = new AdamW8bit(be, store, OPTS);
    const sh = new ShardedOptimizer(be, store, opt);
    sh.takeParams();
    store.release();
    return { be, store, opt, sh };
  });
}

/** Each rank's slice of the full gradient `g`, as the reduce-scatter leaves it. */
function setGrads(ranks: Rank[], g: Float32Array): void {
  for (const { be, sh } of ranks) {
    be.fill(sh.grads, 0);
    for (const s of sh.segments) {
      const a = s.offset + s.shard.start;
      if (s.shard.validLength > 0) {
        be.upload(sh.grads, g.subarray(a, a + s.shard.validLength), s.shardOffset);
      }
    }
  }
}

async function fullParams(ranks: Rank[]): Promise<Float32Array> {
  const got = await Promise.all(
    ranks.map((r) =>
      r.sh.withFullParams(() => (r.be.download(r.store.params) as Float32Array).slice())
    ),
  );
  return got[0];
}

function assertSameState(label: string, a: StateDict, b: StateDict): void {
  assert.deepEqual([...a.keys()], [...b.keys()], `${label}: tensors`);
  for (const [k, t] of b) {
    const u = a.get(k)!;
    assert.ok(
      u.data.length === t.data.length && u.data.every((x, i) => Object.is(x, t.data[i])),
      `${label}: ${k} differs`,
    );
  }
}

/**
 * Step the one process (`ref` over `store`) and the ranks on the same gradients (seeds
 * `seeds`), then compare the values and the gathered state bit for bit.
 */
async function stepBoth(
  label: string,
  one: { be: CpuBackend; store: ParamStore; ref: AdamW8bit },
  ranks: Rank[],
  seeds: number[],
  lr: number,
): Promise<void> {
  for (const seed of seeds) {
    const g = onTensors(seeded(LAYOUT.total, seed));
    one.be.upload(one.store.grads!, g);
    one.ref.step(lr);
    setGrads(ranks, g);
    await Promise.all(ranks.map((r) => r.sh.step(lr)));
  }
  const want = one.be.download(one.store.params) as Float32Array;
  const got = await fullParams(ranks);
  assert.ok(got.every((x, i) => Object.is(x, want[i])), `${label}: values`);
  const states = await Promise.all(ranks.map((r) => r.sh.gatherMoments()));
  for (const s of states) {
    assert.ok("adamw8bit" in s, `${label}: 8-bit state`);
    assertSameState(label, s.adamw8bit, one.ref.exportState());
  }
}

for (const W of [2, 3, 4]) {
  Deno.test(`AdamW8bit sharded over ${W} ranks equals one process bitwise (values, codes, absmaxes) and resumes bitwise`, async () => {
    const p0 = onTensors(seeded(LAYOUT.total, 1));
    const be = new CpuBackend();
    const store = new ParamStore(be, LAYOUT, true, "f32", false);
    be.upload(store.params, p0);
    const one = { be, store, ref: new AdamW8bit(be, store, OPTS) };
    const ranks = makeRanks(W, p0);
    await stepBoth(`W=${W}, 4 steps`, one, ranks, [100, 101, 102, 103], 0.01);
    const bytes = ranks.map((r) => r.sh.report().optimizerBytes);
    console.log(
      `W=${W}: 8-bit state per rank ${bytes.join(", ")} bytes; one process ${one.ref.stateBytes()}`,
    );
    assert.equal(ranks[0].sh.report().fullOptimizerBytes, one.ref.stateBytes());

    // resume: fresh ranks take their slices of the one-process state and step on alike
    const again = makeRanks(W, be.download(store.params) as Float32Array);
    for (const r of again) r.opt.importState(one.ref.exportState(), one.ref.stepCount);
    await stepBoth(`W=${W}, resumed`, one, again, [999], 0.005);
  });
}
