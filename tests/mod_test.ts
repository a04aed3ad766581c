/**
 * The public API (mod.ts) is enough to write a recipe: a model from a registered builder,
 * a real tokenizer, a text sample collated into a batch, the loss on the CPU backend checked
 * against a cross-entropy computed here from the model's logits (fp32 forward tolerance:
 * atol 1e-5, rtol 1e-4), one AdamW step that lowers the loss, and an HF save/load round
 * trip that gives the same loss bitwise.
 */
import { deepStrictEqual, ok, strictEqual, throws } from "node:assert";
import { join } from "node:path";
import * as tune from "../mod.ts";
import {
  AdamW,
  clipGradNorm,
  collatePadded,
  countTargets,
  createBackend,
  createLlama,
  instantiate,
  type LlamaModel,
  loadHfCheckpoint,
  loadTokenizer,
  type ModelSpec,
  parameterCount,
  saveHfCheckpoint,
  textCompletionSample,
  TuneError,
} from "../mod.ts";

const FIX = new URL("./fixtures/", import.meta.url).pathname;

Deno.test("mod.ts exports the pieces a recipe needs, and registers the built-in components", () => {
  for (
    const name of [
      "createBackend",
      "createLlama",
      "llama",
      "parameterCount",
      "loraConfig",
      "AdamW",
      "LrScheduler",
      "clipGradNorm",
      "prepareLabels",
      "FullModelHFCheckpointer",
      "FullModelMetaCheckpointer",
      "Llama2cCheckpointer",
      "readSafetensors",
      "writeSafetensors",
      "loadPeftAdapter",
      "savePeftAdapter",
      "loadTokenizer",
      "sftDataset",
      "textCompletionDataset",
      "DataLoader",
      "collatePadded",
      "alpacaPrompt",
      "instantiate",
      "registerComponent",
      "DiskLogger",
      "ProgressBar",
      "lossCurveSvg",
      "saveTrainingCheckpoint",
      "generateTokens",
      "initProcessGroup",
      "TuneError",
    ]
  ) {
    strictEqual(typeof (tune as Record<string, unknown>)[name], "function", name);
  }
  // Importing mod.ts registers the `_component_` builders configs name.
  for (
    const c of [
      "tune.models.llama",
      "torchtune.models.llama3_2.lora_llama3_2_1b",
      "torchtune.training.FullModelHFCheckpointer",
      "torchtune.modules.loss.CEWithChunkedOutputLoss",
      "torchtune.training.metric_logging.DiskLogger",
    ]
  ) {
    ok(tune.findComponent(c), `${c} is registered`);
  }
  throws(() => instantiate({ _component_: "no.such.builder" }), TuneError);
});

/** Mean cross-entropy of (T, V) logits against targets (-100 ignored), in float64. */
function meanCrossEntropy(logits: Float32Array, targets: Int32Array, V: number): number {
  let sum = 0, n = 0;
  for (let t = 0; t < targets.length; t++) {
    if (targets[t] === -100) continue;
    const row = logits.subarray(t * V, (t + 1) * V);
    const max = row.reduce((a, b) => Math.max(a, b), -Infinity);
    let z = 0;
    for (const x of row) z += Math.exp(x - max);
    sum += Math.log(z) + max - row[targets[t]];
    n++;
  }
  return sum / n;
}

Deno.test("mod.ts: builder -> model -> tokenizer -> batch -> loss on the CPU backend, one AdamW step, HF round trip", async () => {
  const spec = instantiate<ModelSpec>({
    _component_: "tune.models.llama",
    vocab_size: 320,
    num_layers: 2,
    num_heads: 4,
    num_kv_heads: 2,
    embed_dim: 32,
    intermediate_dim: 64,
    max_seq_len: 64,
    norm_eps: 1e-5,
    rope_base: 10000,
    tie_word_embeddings: false,
    qkv_bias: false,
    rope_layout: "interleaved",
    attn_dropout: 0,
  });
  strictEqual(spec.config.nKvHeads, 2);
  const count = parameterCount(spec);
  strictEqual(count.lora, 0);
  // embeddings + output (320*32 each) + 2 layers * (q,o 32*32; k,v 16*32; 3 * 64*32; 2 norms) + norm
  strictEqual(count.base, 2 * 320 * 32 + 2 * (2 * 1024 + 2 * 512 + 3 * 2048 + 64) + 32);

  const tokenizer = loadTokenizer(join(FIX, "tokenizer_sp_small.model"));
  strictEqual(tokenizer.vocabSize, 320);
  const sample = textCompletionSample(tokenizer, "Once upon a time there was a tiny model.", {
    addEos: true,
    maxSeqLen: 64,
  });
  const T = 40;
  ok(sample.tokens.length <= T, `sample of ${sample.tokens.length} tokens fits T=${T}`);
  strictEqual(sample.tokens[0], tokenizer.bosId);
  const batch = collatePadded([sample], { padId: tokenizer.padId, padTo: T });
  deepStrictEqual([batch.batchSize, batch.seqLen], [1, T]);

  const backend = await createBackend("cpu");
  const model: LlamaModel = createLlama(backend, spec, { batch: 1, seqLen: T });
  model.initRandom(7);
  // Loss against a cross-entropy computed here from the model's own logits.
  const logits = (backend.download(model.forward(batch.tokens)) as Float32Array).slice(); // (1, T, V)
  const expected = meanCrossEntropy(logits, batch.labels, 320);
  const before = model.loss(batch.tokens, batch.labels);
  strictEqual(before.tokens, countTargets(batch.labels));
  const mean = before.lossSum / before.tokens;
  console.log(
    `loss ${mean.toFixed(6)} (reference ${expected.toFixed(6)}) over ${before.tokens} tokens`,
  );
  ok(Math.abs(mean - expected) <= 1e-5 + 1e-4 * expected, `${mean} vs ${expected}`);

  // One optimizer step on the same batch lowers its loss.
  model.zeroGrad();
  model.lossAndBackward(batch.tokens, batch.labels, 1 / before.tokens);
  const norm = clipGradNorm(backend, model.trainable, 1.0);
  ok(norm > 0 && Number.isFinite(norm), `grad norm ${norm}`);
  new AdamW(backend, model.trainable, { lr: 1e-2, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0 })
    .step();
  const after = model.loss(batch.tokens, batch.labels);
  console.log(`after one AdamW step: ${(after.lossSum / after.tokens).toFixed(6)}`);
  ok(after.lossSum < before.lossSum, `${after.lossSum} < ${before.lossSum}`);

  // Save as Hugging Face safetensors and load back: the same loss, bitwise.
  const tmp = Deno.makeTempDirSync({ prefix: "tune_mod_" });
  try {
    saveHfCheckpoint(tmp, model.stateDict(), spec.config);
    const loaded = loadHfCheckpoint(tmp);
    strictEqual(loaded.config.ropeLayout, "interleaved");
    const again = createLlama(backend, { ...spec, config: loaded.config }, { batch: 1, seqLen: T });
    again.loadStateDict(loaded.stateDict);
    const back = again.loss(batch.tokens, batch.labels);
    strictEqual(back.lossSum, after.lossSum);
    again.free();
  } finally {
    Deno.removeSync(tmp, { recursive: true });
    model.free();
  }
});
