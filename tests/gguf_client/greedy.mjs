// llama.cpp (through node-llama-cpp) as the independent judge of tune's GGUF export.
//
//   node greedy.mjs '{"model": "m.gguf", "promptIds": [1, 2], "n": 20, "text": "Once"}'
//
// Loads the GGUF with one context (2 threads, flash attention off, context n + prompt + 1 so
// llama.cpp never shifts it), feeds the prompt ids, and takes n greedy steps: each step reads
// llama.cpp's full next-token distribution, picks the most likely id and feeds it back.
// Prints JSON: {ids, logprobs: [per step: log-probabilities of every token], tokenized}, where
// `tokenized` is llama.cpp's own tokenization of `text` (special tokens and BOS as the GGUF's
// metadata says), to check the tokenizer metadata.
import { getLlama } from "node-llama-cpp";

const args = JSON.parse(process.argv[2]);
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error", maxThreads: 2 });
const model = await llama.loadModel({ modelPath: args.model, gpuLayers: 0 });
const contextSize = args.promptIds.length + args.n + 1;
const context = await model.createContext({
  contextSize,
  batchSize: contextSize,
  threads: 2,
  flashAttention: false,
});
const seq = context.getSequence();

const ids = [];
const logprobs = [];
let input = args.promptIds.map((t, i, a) =>
  i === a.length - 1
    ? [t, {
      generateNext: { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } },
    }]
    : t
);
for (let step = 0; step < args.n; step++) {
  const out = await seq.controlledEvaluate(input);
  const probs = out[out.length - 1].next.probabilities;
  const [best] = probs.entries().next().value;
  const row = [];
  for (const [tok, p] of probs) row[tok] = Math.log(p);
  logprobs.push(row);
  ids.push(best);
  input = [[best, {
    generateNext: { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } },
  }]];
}
const tokenized = args.text === undefined ? null : Array.from(model.tokenize(args.text, true));
console.log(JSON.stringify({ ids, logprobs, tokenized }));
await context.dispose();
await model.dispose();
await llama.dispose();
