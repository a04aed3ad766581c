/**
 * Text generation: prompt tokenization (raw, Alpaca template, chat formats), next-token
 * sampling (greedy, temperature, top-k, top-p, seeded), the KV-cache decoding loop and
 * streaming detokenization. The generate recipe (recipes/generate.ts) and the demo use it:
 *
 * ```ts
 * const ids = promptTokens(tokenizer, "Once upon a time", { instructTemplate: null, chatFormat: null });
 * const stream = new TextStream(tokenizer, ids);
 * const r = generateTokens(model, backend, [ids], {
 *   temperature: 0.6, topK: 300, topP: null, maxNewTokens: 100,
 *   stopIds: tokenizer.stopIds, rng: new SeededRandom(1234),
 *   onToken: (_b, id) => write(stream.push(id)),
 * });
 * write(stream.flush());
 * ```
 * @module
 */
export {
  argmax,
  checkSamplingOptions,
  drawFrom,
  sampleToken,
  samplingDistribution,
  type SamplingOptions,
  SamplingScratch,
} from "./sampling.ts";
export { TextStream } from "./stream.ts";
export { type GenerateOptions, type GenerateResult, generateTokens } from "./generate.ts";
export { type PromptOptions, promptTokens, type PromptValue } from "./prompt.ts";
