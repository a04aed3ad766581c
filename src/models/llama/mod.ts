/**
 * Llama-family models (Llama 2/3/3.1/3.2/3.3, Mistral, Qwen2/2.5/3, Phi-3/4, Gemma 1, llama2.c)
 * over the op interface.
 *
 * The model API recipes use:
 *
 * ```ts
 * const model = createLlama(backend, spec, {
 *   batch: 2, seqLen: 512,            // every buffer is allocated for this (B, T)
 *   activationCheckpointing: true,    // keep layer inputs only, recompute in backward
 *   logitChunks: 8,                   // torchtune's num_output_chunks: (B*T/8, V) logits at a time
 *   seed: 0,                          // LoRA init and dropout masks
 *   // training: false,                // eval/generation only: no grads, moments, backward scratch
 *   // groupWindows: worldSize,        // ZeRO-3: weights as group-sized slots; train with
 *   //                                 // trainStep + groupHooks (src/training/sharded.ts)
 * });
 * model.loadStateDict(sd);              // tune names; TuneError naming a missing/misshapen tensor
 * // or model.initRandom(seed)          // deterministic fresh weights (tiny demo models)
 *
 * // training: grads accumulate over micro-batches; the loss head says what the step optimises
 * const optimizer = new AdamW(backend, model.trainable, adamwOptions);   // src/optim/adamw.ts
 * const sched = new LrScheduler(cosine, adamwOptions.lr, totalSteps);   // src/optim/lr_schedule.ts
 * model.zeroGrad();
 * const { lossSum, tokens } = await model.trainStep(
 *   { tokens: tokenIds, targets: labels },         // + segments/positions when packed
 *   crossEntropyHead(1 / tokensInStep),             // or distillHead(...), preferenceHead(weigh)
 * );                                               // (sync twin: model.lossAndBackward(...))
 * clipGradNorm(backend, model.trainable, maxNorm);   // src/optim/clip.ts
 * optimizer.step(sched.lrAt(step));                  // one fused AdamW call over model.trainable
 * // resume: exportAdamWState(optimizer) / importAdamWState(optimizer, state)
 *
 * // evaluation / logits
 * const logits = model.forward(tokenIds);             // (B, T, V) device buffer
 * const { lossSum, tokens } = model.loss(tokenIds, labels);
 * const { seqLoss } = await model.evalLosses({ tokens, targets }, { adapters: false });
 *
 * // generation with a KV cache
 * model.setupCaches(1, promptLen + maxNewTokens);
 * let logits = model.prefill(prompt);                 // (B, V) of the last position
 * logits = model.decodeStep(Int32Array.of(next));     // one token per sequence
 *
 * // saving
 * model.stateDict();          // base (+ adapters), tune names
 * model.adapterStateDict();   // LoRA adapters only
 * model.mergedStateDict();    // base with W += (alpha / r) B A
 * model.memory();             // bytes of parameters, gradients, optimizer, activations
 * model.dropoutStep;           // save/restore on resume: keys the LoRA dropout masks
 * ```
 *
 * `model.trainable` is the ParamStore the optimizer updates (flat `params`, `grads`, `m`, `v`
 * device buffers with one layout table): the adapters under LoRA (the base is frozen in
 * `model.base`), else the base weights. Layouts are contiguous per layer (groups
 * "tok_embeddings", "layers.i", "head") for sharding.
 * Token ids and labels are host Int32Arrays of B*T entries; -100 in labels is ignored.
 *
 * @module
 */
export { createLlama, crossEntropyHead, distillHead, LlamaModel, preferenceHead } from "./model.ts";
export type {
  BatchOptions,
  EvalLosses,
  GroupHooks,
  LlamaOptions,
  LossHead,
  LossResult,
  MemoryReport,
  TrainBatch,
} from "./model.ts";
export { baseLayout, loraLayout, loraSites } from "./layout.ts";
export { randomBaseWeights } from "./init.ts";
export type { LlamaConfig, RopeScaling } from "./config.ts";
