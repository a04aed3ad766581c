/**
 * Shared checks of the model-family tests: a model's full-forward logits, and KV-cache greedy
 * decoding checked against them (the cached logits of every step, and optionally that each
 * chosen token is the full forward's argmax).
 */
import { strictEqual as assertEquals } from "node:assert";
import { CpuBackend } from "../src/backend/cpu/backend.ts";
import type { LlamaConfig } from "../src/models/llama/config.ts";
import { createLlama } from "../src/models/llama/model.ts";
import type { StateDict } from "../src/params/state_dict.ts";
import { assertClose } from "./fixture_io.ts";

/** Logits (1, T, V) of `tokens` through a fresh CPU model with `sd`. */
export function fullLogits(sd: StateDict, config: LlamaConfig, tokens: Int32Array): Float32Array {
  const be = new CpuBackend();
  const model = createLlama(be, { name: "m", config, lora: null }, {
    batch: 1,
    seqLen: tokens.length,
    training: false,
  });
  model.loadStateDict(sd);
  const out = (be.download(model.forward(tokens)) as Float32Array).slice(); // (1, T, V)
  model.free();
  return out;
}

/** Index of the largest of a[o .. o + V). */
function argmaxAt(a: Float32Array, o: number, V: number): number {
  let best = 0;
  for (let v = 1; v < V; v++) if (a[o + v] > a[o + best]) best = v;
  return best;
}

/**
 * Greedy-decode `steps` tokens after `prompt` with the KV cache, then check every step's cached
 * logits against the full forward of the whole sequence (atol 1e-5, rtol 1e-4) and, with
 * `argmax`, that each chosen token is the full forward's argmax. Returns the continuation.
 */
export function checkCachedGreedy(
  hf: { stateDict: StateDict; config: LlamaConfig },
  prompt: Int32Array,
  steps: number,
  opts: { argmax: boolean },
): number[] {
  const be = new CpuBackend();
  const model = createLlama(be, { name: "m", config: hf.config, lora: null }, {
    batch: 1,
    seqLen: prompt.length + steps,
    training: false,
  });
  model.loadStateDict(hf.stateDict);
  model.setupCaches(1, prompt.length + steps);
  const V = hf.config.vocabSize;
  const seq = [...prompt];
  const cached: Float32Array[] = [];
  let last = (be.download(model.prefill(prompt)) as Float32Array).slice();
  for (let s = 0; s < steps; s++) {
    cached.push(last);
    const next = argmaxAt(last, 0, V);
    seq.push(next);
    if (s < steps - 1) {
      last = (be.download(model.decodeStep(new Int32Array([next]))) as Float32Array).slice();
    }
  }
  model.free();
  const full = fullLogits(hf.stateDict, hf.config, new Int32Array(seq));
  for (let s = 0; s < steps; s++) {
    const t = prompt.length - 1 + s;
    if (opts.argmax) assertEquals(argmaxAt(full, t * V, V), seq[t + 1], `position ${t}`);
    assertClose(`cached logits at ${t}`, cached[s], full.subarray(t * V, (t + 1) * V), {
      atol: 1e-5,
      rtol: 1e-4,
    });
  }
  return seq.slice(prompt.length);
}
