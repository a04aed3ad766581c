/**
 * GPU checks, activation offloading (src/backend/cuda/offload.ts, src/models/llama/activation_stash.ts):
 * training steps of a Llama-shaped LoRA model (activation checkpointing off and on) with
 * offloading off and on must give bitwise the same losses and gradients; the check prints the
 * device bytes each way (every activation buffer is allocated when the model is built, so the
 * bytes in use after a step are the step's peak of live buffers), the bytes offloaded to
 * page-locked host memory and the time per step, for the record of the next GPU session. Runs
 * under `deno test` when a GPU answers and from scripts/gpu_check.ts (--small: a tiny shape,
 * for the kernel emulator).
 */
import type { LlamaConfig } from "../../src/models/llama/config.ts";
import type { DeviceBuffer } from "../../src/backend/ops.ts";
import { check, cmpArrays, EXACT, gpu, gpuTest, type Outcome, randInt, sz } from "./_harness.ts";

interface Steps {
  losses: number[];
  grads: Float32Array;
  inUse: number;
  offloaded: number;
  msPerStep: number;
}

/** Offloading off and on, bitwise, with the memory each way. */
export async function offloadChecks(): Promise<void> {
  if (!("activationOffloader" in gpu)) {
    console.log("info  offload: the backend under test has no activation offloader (--self-test)");
    return;
  }
  const { createLlama } = await import("../../src/models/llama/model.ts");
  const config: LlamaConfig = {
    vocabSize: sz(8192, 64),
    dim: sz(1024, 32),
    nLayers: sz(8, 4),
    nHeads: sz(16, 4),
    nKvHeads: sz(4, 2),
    hiddenDim: sz(4096, 64),
    normEps: 1e-5,
    ropeTheta: 500000,
    ropeScaling: null,
    ropeLayout: "half",
    maxSeqLen: sz(512, 8),
    tiedEmbeddings: false,
    qkvBias: false,
  };
  const B = sz(4, 2), T = sz(512, 8), steps = sz(3, 1);
  const lora = {
    attnModules: ["q_proj", "v_proj", "output_proj"] as ("q_proj" | "v_proj" | "output_proj")[],
    applyToMlp: true,
    applyToOutput: false,
    rank: 16,
    alpha: 32,
    dropout: 0.05,
  };
  const batches = Array.from({ length: steps }, () => randInt(B * T + 1, config.vocabSize));

  const run = (checkpointing: boolean, offload: boolean): Steps => {
    const model = createLlama(gpu, { name: "offload", config, lora }, {
      batch: B,
      seqLen: T,
      activationCheckpointing: checkpointing,
      activationOffloading: offload,
      activationDtype: "bf16",
      frozenDtype: "bf16",
      seed: 5,
    });
    try {
      model.initRandom(7);
      const losses: number[] = [];
      let ms = 0;
      for (const ids of batches) {
        model.zeroGrad();
        gpu.sync();
        const t0 = performance.now();
        const r = model.lossAndBackward(ids.subarray(0, B * T), ids.subarray(1), 1 / (B * T));
        gpu.sync();
        ms += performance.now() - t0;
        losses.push(r.lossSum);
      }
      return {
        losses,
        grads: gpu.download(model.trainable.grads as DeviceBuffer) as Float32Array,
        inUse: gpu.bytesInUse(),
        offloaded: model.memory().offloaded,
        msPerStep: ms / batches.length,
      };
    } finally {
      model.free();
    }
  };

  for (const checkpointing of [false, true]) {
    check(`activation offloading (LoRA, ckpt ${checkpointing ? "on" : "off"})`, () => {
      const a = run(checkpointing, false), b = run(checkpointing, true);
      const mib = (n: number) => `${n} B (${(n / 2 ** 20).toFixed(1)} MiB)`;
      console.log(
        `info  offload L=${config.nLayers} C=${config.dim} B=${B} T=${T} ckpt=${checkpointing}: device bytes in use ${
          mib(a.inUse)
        } without, ${mib(b.inUse)} with offloading (${
          mib(a.inUse - b.inUse)
        } less); offloaded to pinned host memory ${mib(b.offloaded)}; ${
          a.msPerStep.toFixed(1)
        } ms/step without, ${b.msPerStep.toFixed(1)} with`,
      );
      const out: Outcome[] = [
        cmpArrays("losses", b.losses, a.losses, EXACT),
        cmpArrays("adapter gradients", b.grads, a.grads, EXACT),
      ];
      const saved = a.inUse - b.inUse;
      // layers 0..L-2 go to the host; the rings keep one spare slot on the device
      const least = b.offloaded * (config.nLayers - 2) / (config.nLayers - 1) * 0.98;
      out.push({
        label: "device bytes saved",
        ok: saved >= least && saved <= b.offloaded,
        detail: `${saved} of ${b.offloaded} offloaded`,
      });
      return out;
    });
  }
}

gpuTest("activation offloading (side stream, pinned host memory)", offloadChecks);
