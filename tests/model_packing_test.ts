/**
 * Packed samples through the whole model: with segment ids and per-sample positions, the
 * loss and gradients of a pack of two samples equal the sums of each sample run alone
 * (torchtune's block-causal mask + input_pos); without them the default path is unchanged.
 * The ZeRO-3 path (trainStep) with packing equals lossAndBackward with packing.
 * Tolerances: loss 1e-5 abs; summed gradients atol 1e-5 (plus rtol 1e-4); trivial packing
 * vs none and async vs sync: bitwise.
 */
import { deepStrictEqual, ok, throws } from "node:assert";
import { assertClose, loadFixture } from "./fixture_io.ts";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { createLlama, crossEntropyHead, type LlamaModel } from "../src/models/llama/model.ts";
import { fixtureConfig, prefixedStateDict } from "./_model_helpers.ts";
import { TuneError } from "../src/errors.ts";
import { AdamW, ADAMW_DEFAULTS } from "../src/optim/adamw.ts";
import { ShardedOptimizer } from "../src/training/sharded.ts";

const fx = loadFixture("model_train_full");
const be = new CpuBackend();

function model(T: number): LlamaModel {
  const m = createLlama(be, { name: "tiny", config: fixtureConfig(fx), lora: null }, {
    batch: 1,
    seqLen: T,
  });
  m.loadStateDict(prefixedStateDict(fx, "w."));
  return m;
}

const V = fixtureConfig(fx).vocabSize;
const ids = (n: number, seed: number) =>
  Int32Array.from({ length: n }, (_, i) => (i * 7 + seed * 13 + 3) % V);
// Two samples with shifted labels (the last label of each is -100, as packing.ts makes them).
const tokA = ids(5, 1), tokB = ids(7, 2);
const labA = Int32Array.from([...tokA.slice(1), -100]);
const labB = Int32Array.from([...tokB.slice(1), -100]);
const tokens = Int32Array.from([...tokA, ...tokB]); // (1, 12)
const labels = Int32Array.from([...labA, ...labB]); // (1, 12)
const segments = Int32Array.from({ length: 12 }, (_, t) => (t < 5 ? 0 : 1));
const positions = Int32Array.from({ length: 12 }, (_, t) => (t < 5 ? t : t - 5));

function grads(m: LlamaModel): Float32Array {
  return be.download(m.trainable.grads!) as Float32Array;
}

Deno.test("loss() of a pack of two samples equals the sum of each sample's loss alone", () => {
  const pack = model(12), a = model(5), b = model(7);
  const packed = pack.loss(tokens, labels, { segments, positions });
  const alone = a.loss(tokA, labA).lossSum + b.loss(tokB, labB).lossSum;
  const leaky = pack.loss(tokens, labels).lossSum; // plain causal: B sees A
  console.log(`packed ${packed.lossSum} alone ${alone} unmasked ${leaky}`);
  ok(Math.abs(packed.lossSum - alone) <= 1e-5, `loss diff ${packed.lossSum - alone}`);
  ok(Math.abs(leaky - alone) > 1e-4, "the unmasked pack differs (the test can fail)");
  deepStrictEqual(packed.tokens, 10);
  for (const m of [pack, a, b]) m.free();
});

Deno.test("lossAndBackward() of a pack of two samples gives the summed gradients of each alone", () => {
  const pack = model(12), a = model(5), b = model(7);
  pack.zeroGrad();
  const packed = pack.lossAndBackward(tokens, labels, 1, { segments, positions }).lossSum;
  a.zeroGrad();
  b.zeroGrad();
  const alone = a.lossAndBackward(tokA, labA, 1).lossSum + b.lossAndBackward(tokB, labB, 1).lossSum;
  ok(Math.abs(packed - alone) <= 1e-5, `loss diff ${packed - alone}`);
  const ga = grads(a), gb = grads(b);
  const sum = ga.map((x, i) => x + gb[i]);
  assertClose("grads", grads(pack), sum, { atol: 1e-5, rtol: 1e-4 });
  for (const m of [pack, a, b]) m.free();
});

Deno.test("loss()/lossAndBackward() with one segment at positions 0..T-1 equal no packing bitwise", () => {
  const m = model(12);
  const one = new Int32Array(12), seq = Int32Array.from({ length: 12 }, (_, t) => t);
  const plain = m.loss(tokens, labels).lossSum;
  deepStrictEqual(m.loss(tokens, labels, { segments: one, positions: seq }).lossSum, plain);
  m.zeroGrad();
  m.lossAndBackward(tokens, labels, 1);
  const g0 = grads(m);
  m.zeroGrad();
  m.lossAndBackward(tokens, labels, 1, { segments: one, positions: seq });
  deepStrictEqual(grads(m), g0);
  // packing is per call: the next plain call is plain again
  deepStrictEqual(m.loss(tokens, labels).lossSum, plain);
  m.free();
});

Deno.test("loss() throws TuneError on a packed position past max_seq_len", () => {
  const m = model(12);
  const bad = positions.slice();
  bad[3] = 64;
  throws(() => m.loss(tokens, labels, { segments, positions: bad }), TuneError);
  m.free();
});

Deno.test("trainStep() with packing gives lossAndBackward's packed loss and gradients bitwise", async () => {
  const spec = { name: "tiny", config: fixtureConfig(fx), lora: null };
  const opts = { batch: 1, seqLen: 12, activationCheckpointing: true };
  const ref = createLlama(be, spec, opts);
  ref.loadStateDict(prefixedStateDict(fx, "w."));
  const z = createLlama(be, spec, { ...opts, optimizerMoments: false, groupWindows: 1 });
  z.trainable.materialize();
  z.loadStateDict(ref.stateDict());
  const sharded = new ShardedOptimizer(be, z.trainable, new AdamW(be, z.trainable, ADAMW_DEFAULTS));
  sharded.takeParams();
  z.trainable.release();
  z.groupHooks = sharded;
  ref.zeroGrad();
  sharded.zeroGrads();
  const pack = { segments, positions };
  const r = ref.lossAndBackward(tokens, labels, 1, pack);
  const a = await z.trainStep({ ...pack, tokens, targets: labels }, crossEntropyHead(1));
  deepStrictEqual(a, r);
  const zg = (be.download(sharded.grads) as Float32Array).subarray(0, ref.trainable.layout.total);
  deepStrictEqual(zg, grads(ref));
  const plain = ref.loss(tokens, labels).lossSum;
  ok(plain !== r.lossSum, "packing changed the loss");
  sharded.free();
  ref.free();
  z.free();
});
