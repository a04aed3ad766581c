/**
 * Peak resident memory of one training step with the output projection and cross-entropy
 * in 1 vs 8 row chunks (torchtune's CEWithChunkedOutputLoss num_output_chunks), at Llama 3's
 * vocabulary of 128256: only (ceil(B*T / chunks), V) logits exist at a time, so the peak
 * should fall by about 7/8 of the (B*T, V) fp32 logits buffer.
 *
 *   deno run -A bench/chunked_loss_memory.ts              # chunks 1 and 8, each in a fresh process
 *   deno run -A bench/chunked_loss_memory.ts --chunks 8
 *
 * Model: 1 layer, embed_dim 64, 4 heads, tied embeddings (so the vocabulary costs one
 * (V, C) weight, 32.8 MB), LoRA on q/v with the base frozen (no (V, C) gradient or Adam
 * moments to blur the figure); batch (2, 256): 512 rows, full logits 512 * 128256 * 4 B =
 * 262.7 MB. Each child prints the loss, VmRSS after setup, VmHWM (the process's peak) after
 * one step (forward, backward, AdamW), and the model's own activation tally.
 */
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import { llama } from "../src/models/builders/llama.ts";
import { createLlama } from "../src/models/llama/model.ts";
import { AdamW } from "../src/optim/adamw.ts";

const V = 128256, B = 2, T = 256;

function status(key: string): number {
  const line = Deno.readTextFileSync("/proc/self/status").split("\n").find((l) =>
    l.startsWith(key)
  );
  return Number(line!.split(/\s+/)[1]) * 1024;
}

function child(chunks: number): void {
  const config = llama({
    vocabSize: V,
    numLayers: 1,
    numHeads: 4,
    embedDim: 64,
    intermediateDim: 128,
    maxSeqLen: T,
    tieWordEmbeddings: true,
  });
  const lora = {
    attnModules: ["q_proj", "v_proj"] as ("q_proj" | "v_proj")[],
    applyToMlp: false,
    applyToOutput: false,
    rank: 8,
    alpha: 16,
    dropout: 0,
  };
  const be = new CpuBackend();
  const model = createLlama(be, { name: `chunks${chunks}`, config, lora }, {
    batch: B,
    seqLen: T,
    logitChunks: chunks,
  });
  model.initRandom(0);
  const opt = new AdamW(be, model.trainable, {
    lr: 1e-4,
    betas: [0.9, 0.999],
    eps: 1e-8,
    weightDecay: 0.01,
  });
  const setupRss = status("VmRSS:");
  const tokens = Int32Array.from({ length: B * T }, (_, i) => (i * 7919 + 3) % V);
  const targets = Int32Array.from({ length: B * T }, (_, i) => (i * 104729 + 10) % V);
  const t0 = performance.now();
  model.zeroGrad();
  const r = model.lossAndBackward(tokens, targets, 1 / (B * T));
  opt.step();
  const stepS = (performance.now() - t0) / 1000;
  const grads = be.download(model.trainable.grads!) as Float32Array;
  let gradSq = 0;
  for (const g of grads) gradSq += g * g;
  const mem = model.memory();
  console.log(JSON.stringify({
    chunks,
    loss: r.lossSum / r.tokens,
    gradNorm: Math.sqrt(gradSq),
    setupRssBytes: setupRss,
    peakRssBytes: status("VmHWM:"),
    activationBytes: mem.activations + mem.scratch,
    stepS,
  }));
}

const at = Deno.args.indexOf("--chunks");
if (at >= 0) child(Number(Deno.args[at + 1]));
else {
  const rows = [];
  for (const chunks of [1, 8]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(import.meta.url).pathname, "--chunks", String(chunks)],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    if (out.code !== 0) Deno.exit(out.code);
    const row = JSON.parse(new TextDecoder().decode(out.stdout).trim());
    console.log(JSON.stringify(row));
    rows.push(row);
  }
  const mb = (b: number) => (b / 1e6).toFixed(1);
  const [one, eight] = rows;
  console.log(
    `peak RSS: 1 chunk ${mb(one.peakRssBytes)} MB, 8 chunks ${mb(eight.peakRssBytes)} MB ` +
      `(-${mb(one.peakRssBytes - eight.peakRssBytes)} MB); activations ${
        mb(one.activationBytes)
      } -> ${mb(eight.activationBytes)} MB; full logits ${mb(B * T * V * 4)} MB, ` +
      `7/8 of them ${mb(B * T * V * 4 * 7 / 8)} MB; loss ${one.loss} vs ${eight.loss}`,
  );
}
