/**
 * What makes a Hugging Face model folder loadable on its own (`from_pretrained`, vLLM,
 * llama.cpp's converter, tune): besides the weights and config.json, the tokenizer and
 * generation files of the input folder. A save copies every one of them the input had.
 */
import { join } from "node:path";
import { atomicWrite } from "./atomic_write.ts";
import { exists } from "./fs.ts";

/** Files a loader reads beside the weights, copied from the input folder when present. */
export const HF_LOADER_FILES: readonly string[] = [
  "tokenizer.json",
  "tokenizer_config.json",
  "tokenizer.model", // SentencePiece (Llama 2, Mistral, Gemma, Phi-3) or tiktoken (Llama 3 original)
  "special_tokens_map.json",
  "added_tokens.json",
  "vocab.json", // Qwen2's BPE pair
  "merges.txt",
  "generation_config.json",
  "chat_template.jinja",
  "chat_template.json",
  "tokenizer.bin", // llama2.c
];

/** Copy the loader files `src` holds into `dst` (each through a temporary name); returns their names. */
export function copyLoaderFiles(src: string, dst: string): string[] {
  const copied: string[] = [];
  for (const f of HF_LOADER_FILES) {
    const from = join(src, f);
    if (!exists(from)) continue;
    atomicWrite(join(dst, f), Deno.readFileSync(from));
    copied.push(f);
  }
  return copied;
}

/** The tokenizer file of a model folder (tokenizer.json first, as transformers prefers), or null. */
export function findTokenizerFile(dir: string): string | null {
  for (const f of ["tokenizer.json", "tokenizer.model", "tokenizer.bin"]) {
    if (exists(join(dir, f))) return join(dir, f);
  }
  return null;
}
