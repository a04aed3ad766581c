/**
 * Child process of tests/cuda_offload_test.ts: activation offloading on the CUDA backend,
 * against a fake driver (path in Deno.args[0]) whose race detector reports any access to
 * device or page-locked host memory that the streams and events do not order.
 * `--emulated` (the driver runs the kernels, tests/_emulator.ts, slow): a LoRA step without
 * and a full step with activation checkpointing. Otherwise (kernels not run, fast): the race
 * detector's own check, then LoRA and full, checkpointing on and off, two micro-batches each.
 * Prints one line per check with the memory figures; exits non-zero on the first failure.
 */
import assert from "node:assert/strict";
import { fakeHooks } from "./_fake_driver.ts";
import type { DeviceBuffer } from "../src/backend/ops.ts";
import { llama } from "../src/models/builders/llama.ts";
import type { LoraConfig } from "../src/models/model_spec.ts";

const libPath = Deno.args[0];
const EMULATED = Deno.args.includes("--emulated");
for (const v of ["TUNE_LIBCUDA", "TUNE_LIBCUBLASLT", "TUNE_LIBNCCL"]) Deno.env.set(v, libPath);

const { createCudaBackend } = await import("../src/backend/cuda/backend.ts");
const { createLlama, crossEntropyHead } = await import("../src/models/llama/model.ts");

const fake = fakeHooks(libPath);

const ok = fake.ok;

const be = createCudaBackend();

// ---- the race detector sees a missing wait -----------------------------------------------

if (!EMULATED) {
  await ok("the fake driver reports a ring buffer reused before its copies land", () => {
    const off = be.activationOffloader();
    const data = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i));
    const x = be.alloc(1000, "f32");
    be.upload(x, data);
    const host = off.allocHost(4000);
    const done = off.event();
    const races = () => Number(fake.fake_races());
    // compute overwrites the buffer the side stream is still copying out
    off.toHost([x], host, done);
    be.fill(x, 0);
    assert.ok(races() > 0, "a write racing the copy to the host went unseen");
    fake.fake_reset();
    // compute reads the buffer before its copy back lands
    off.toDevice(host, [x], done);
    be.download(x);
    assert.ok(races() > 0, "a read racing the copy back went unseen");
    fake.fake_reset();
    // with the waits (a fresh buffer: x's copy back was never waited for): no race, and the
    // values come back bitwise
    const y = be.alloc(1000, "f32");
    be.upload(y, data);
    off.toHost([y], host, done);
    off.waitFor(done);
    be.fill(y, 0);
    off.toDevice(host, [y], done);
    off.waitFor(done);
    assert.deepEqual(be.download(y), data);
    assert.equal(races(), 0);
    assert.equal(Number(fake.fake_host_bytes_live()), 4000);
    off.release();
    assert.equal(Number(fake.fake_host_bytes_live()), 0);
    fake.fake_reset(); // freeing x (never waited for) is the test's own race
    be.free(x);
    be.free(y);
  });
}

// ---- training steps, offloading off and on -------------------------------------------------

const L = 4;
// torchtune's llama builder with its defaults (rms eps 1e-5, rope base 10000, untied, no bias)
const config = llama({
  vocabSize: 64,
  embedDim: 32,
  numLayers: L,
  numHeads: 4,
  numKvHeads: 2,
  intermediateDim: 64,
  maxSeqLen: 16,
});
const lora: LoraConfig = {
  attnModules: ["q_proj", "v_proj", "output_proj"],
  applyToMlp: true,
  applyToOutput: true,
  rank: 4,
  alpha: 8,
  dropout: EMULATED ? 0 : 0.1,
};
const B = 2, T = 8;
const batches = (EMULATED ? [1] : [1, 2]).map((s) => {
  const ids = Int32Array.from({ length: B * T + 1 }, (_, i) => (i * 7 + s * 13) % 64);
  return { tokens: ids.slice(0, B * T), targets: ids.slice(1) };
});

interface Run {
  losses: number[];
  grads: Uint8Array[];
  endOfForward: number;
  offloaded: number;
  activations: number;
}

/** Two micro-batches (zeroGrad between): losses, gradient bytes, memory at the end of forward. */
async function run(withLora: boolean, checkpointing: boolean, offload: boolean): Promise<Run> {
  const model = createLlama(be, { name: "tiny", config, lora: withLora ? lora : null }, {
    batch: B,
    seqLen: T,
    activationCheckpointing: checkpointing,
    activationOffloading: offload,
    activationDtype: "bf16",
    seed: 3,
  });
  model.initRandom(11);
  let endOfForward = -1;
  model.groupHooks = {
    beforeGroup: (g, phase) => {
      if (g === "head" && phase === "forward") endOfForward = be.bytesInUse();
      return Promise.resolve();
    },
    afterGroupBackward: () => Promise.resolve(),
  };
  const out: Run = { losses: [], grads: [], endOfForward: 0, offloaded: 0, activations: 0 };
  for (const b of batches) {
    model.zeroGrad();
    const r = await model.trainStep(b, crossEntropyHead(1 / (B * T)));
    out.losses.push(r.lossSum);
    const g = be.download(model.trainable.grads as DeviceBuffer) as Float32Array;
    out.grads.push(new Uint8Array(g.buffer));
  }
  const mem = model.memory();
  out.endOfForward = endOfForward;
  out.offloaded = mem.offloaded;
  out.activations = mem.activations;
  assert.equal(Number(fake.fake_host_bytes_live()), mem.offloaded);
  model.free();
  assert.equal(Number(fake.fake_host_bytes_live()), 0, "host memory left after free()");
  return out;
}

const cases = EMULATED
  ? [[true, false], [false, true]]
  : [[true, false], [true, true], [false, false], [false, true]];
for (const [withLora, checkpointing] of cases) {
  const label = `${withLora ? "LoRA" : "full"}, checkpointing ${checkpointing ? "on" : "off"}`;
  const what = EMULATED ? "bitwise-equal losses and gradients" : "ordered copies, less memory";
  await ok(`offloading off and on: ${what} (${label})`, async () => {
    const a = await run(withLora, checkpointing, false);
    const waits0 = Number(fake.fake_stream_waits());
    const b = await run(withLora, checkpointing, true);
    assert.ok(Number(fake.fake_stream_waits()) > waits0, "no stream waited for an event");
    assert.equal(Number(fake.fake_races()), 0);
    if (EMULATED) {
      // (where kernels do not run, buffers keep whatever their last copy left)
      assert.ok(a.losses.every(Number.isFinite) && a.losses[0] > 0);
      assert.deepEqual(b.losses, a.losses);
      for (let i = 0; i < a.grads.length; i++) assert.deepEqual(b.grads[i], a.grads[i]);
    }
    const saved = a.endOfForward - b.endOfForward;
    const losses = EMULATED ? `; losses ${a.losses.join(", ")}` : "";
    console.log(
      `    device bytes in use at the end of forward: ${a.endOfForward} without, ${b.endOfForward} with offloading (${saved} less); offloaded to host: ${b.offloaded}${losses}`,
    );
    assert.equal(a.offloaded, 0);
    assert.equal(a.activations - b.activations, saved);
    // layers 0..L-2 go to the host; the rings keep one spare slot of each on the device
    assert.ok(saved <= b.offloaded, `${saved} saved > ${b.offloaded} offloaded`);
    // (all but 16-byte alignment padding: rstd and lse are short)
    const atLeast = 0.98 * b.offloaded * (L - 2) / (L - 1);
    assert.ok(saved >= atLeast, `${saved} saved, ${b.offloaded} offloaded`);
  });
}

console.log("all offload checks passed");
