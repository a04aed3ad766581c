/**
 * Child process of tests/cuda_paged_adamw_test.ts: bitsandbytes' PagedAdamW on the CUDA
 * backend (moments in page-locked host memory, paged through the device per step), against a
 * fake driver (path in Deno.args[0]) whose race detector reports any access the streams and
 * events leave unordered. Without `--emulated` (kernels not run, fast): full-model steps,
 * whole and group by group over pages that split groups, keep every copy ordered, and the
 * device holds no moments. With `--emulated` (the driver runs the kernels): the same steps
 * give bitwise AdamW's weights and moments, and a checkpoint's moments restore bitwise. The
 * sharded optimizer refuses PagedAdamW in one line.
 * One line per check; exits non-zero on the first failure.
 */
import assert from "node:assert/strict";
import { fakeHooks } from "./_fake_driver.ts";
import { llama } from "../src/models/builders/llama.ts";

const libPath = Deno.args[0];
const EMULATED = Deno.args.includes("--emulated");
for (const v of ["TUNE_LIBCUDA", "TUNE_LIBCUBLASLT", "TUNE_LIBNCCL"]) Deno.env.set(v, libPath);

const { createCudaBackend } = await import("../src/backend/cuda/backend.ts");
const { createLlama, crossEntropyHead } = await import("../src/models/llama/model.ts");
const { AdamW, exportAdamWState, importAdamWState } = await import("../src/optim/adamw.ts");
const { ShardedOptimizer } = await import("../src/training/sharded.ts");

const fake = fakeHooks(libPath);

const ok = fake.ok;

const be = createCudaBackend();
const config = llama({
  vocabSize: 64,
  embedDim: 32,
  numLayers: 3,
  numHeads: 4,
  numKvHeads: 2,
  intermediateDim: 64,
  maxSeqLen: 16,
});
const B = 2, T = 8;
const batch = (s: number) => {
  const ids = Int32Array.from({ length: B * T + 1 }, (_, i) => (i * 7 + s * 13) % 64);
  return { tokens: ids.slice(0, B * T), targets: ids.slice(1) };
};
const HP = { lr: 1e-2, betas: [0.9, 0.95] as [number, number], eps: 1e-8, weightDecay: 0.1 };
/** Pages of 3000 floats: the tiny model's ~27K trainable values span 10 pages, groups split. */
const PAGE = 3000;

interface Result {
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
  deviceBytes: number;
  hostBytes: number;
}

/** Three steps (the second group by group, as optimizer_in_bwd takes it). */
async function train(paged: boolean): Promise<Result> {
  const model = createLlama(be, { name: "tiny", config, lora: null }, {
    batch: B,
    seqLen: T,
    seed: 3,
    optimizerMoments: !paged,
  });
  model.initRandom(11);
  const opt = new AdamW(be, model.trainable, { ...HP, paged } as typeof HP, PAGE);
  assert.equal(opt.paged !== null, paged);
  if (paged) {
    // the sharded recipes refuse it in one line (each rank already holds only its slice)
    assert.throws(() => new ShardedOptimizer(be, model.trainable, opt), /single-device recipes/);
  }
  for (let s = 0; s < 3; s++) {
    model.zeroGrad();
    await model.trainStep(batch(s), crossEntropyHead(1 / (B * T)));
    if (s === 1) {
      opt.stepCount++;
      for (const g of model.trainable.layout.groups) opt.stepGroup(g, HP.lr);
    } else opt.step();
  }
  const st = exportAdamWState(opt);
  const out = {
    params: be.download(model.trainable.params) as Float32Array,
    m: st.m,
    v: st.v,
    deviceBytes: be.bytesInUse(),
    hostBytes: Number(fake.fake_host_bytes_live()),
  };
  if (opt.paged) {
    assert.equal(out.hostBytes, opt.paged.hostBytes);
    // a restored copy of the moments pages back bitwise
    const copy = { step: st.step, m: st.m.slice(), v: st.v.slice() };
    opt.paged.importMoments(new Float32Array(st.m.length), new Float32Array(st.v.length));
    importAdamWState(opt, copy);
    const again = exportAdamWState(opt);
    assert.deepEqual(again.m, st.m);
    assert.deepEqual(again.v, st.v);
    opt.paged.release();
  }
  model.free();
  assert.equal(Number(fake.fake_host_bytes_live()), 0, "host memory left after release()");
  return out;
}

const what = EMULATED ? "bitwise AdamW's weights and moments" : "ordered copies, no device moments";
await ok(`PagedAdamW against AdamW: ${what}`, async () => {
  const a = await train(false);
  const waits0 = Number(fake.fake_stream_waits());
  const b = await train(true);
  assert.ok(Number(fake.fake_stream_waits()) > waits0, "no stream waited for an event");
  assert.equal(Number(fake.fake_races()), 0);
  const n = a.params.length;
  // the store's two moments leave the device; two staging pages of each come instead
  const staging = 2 * 2 * PAGE * 4;
  console.log(
    `    device bytes in use: ${a.deviceBytes} with AdamW, ${b.deviceBytes} with PagedAdamW; host: ${b.hostBytes} (${n} values)`,
  );
  assert.ok(b.hostBytes >= 8 * n && b.hostBytes < 8 * n + 64 * Math.ceil(n / PAGE));
  assert.equal(a.deviceBytes - b.deviceBytes, 8 * n - staging);
  if (EMULATED) {
    assert.ok(a.params.every(Number.isFinite) && a.m.some((x) => x !== 0));
    assert.deepEqual(b.params, a.params);
    assert.deepEqual(b.m, a.m);
    assert.deepEqual(b.v, a.v);
  }
});

console.log("all paged AdamW checks passed");
