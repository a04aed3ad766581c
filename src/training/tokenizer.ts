/**
 * Build a recipe's tokenizer. With `tokenizer.path` unset the tokenizer comes from the
 * checkpoint folder (tokenizer.json, tokenizer.model or tokenizer.bin beside the weights), as
 * `from_pretrained` finds it, so a folder tune wrote (which copies the input's tokenizer
 * files) loads back with nothing else given.
 */
import { findTokenizerFile } from "../checkpoint/hf_folder.ts";
import { instantiate } from "../config/instantiate.ts";
import type { ComponentSection } from "../config/schema.ts";
import { TuneError } from "../errors.ts";
import type { Tokenizer } from "../tokenizers/types.ts";

/** The tokenizer of `section` and the file it was read from. */
export function buildTokenizer(
  section: ComponentSection,
  checkpointDir: string | null | undefined,
): { tokenizer: Tokenizer; path: string } {
  let path = section.path as string | null | undefined;
  const vocab = section.vocab_path; // Phi-4's vocab.json + merges.txt stand in for a path
  if (typeof vocab === "string" && vocab !== "" && (path === null || path === undefined)) {
    return { tokenizer: instantiate<Tokenizer>(section), path: vocab };
  }
  if (path === null || path === undefined || path === "") {
    const found = checkpointDir ? findTokenizerFile(checkpointDir) : null;
    if (found === null) {
      throw new TuneError(
        `tokenizer.path is not set and checkpointer.checkpoint_dir ${
          checkpointDir ?? "(unset)"
        } holds no tokenizer.json, tokenizer.model or tokenizer.bin; set tokenizer.path`,
      );
    }
    path = found;
  }
  return { tokenizer: instantiate<Tokenizer>({ ...section, path }), path };
}
