/**
 * Registers `checkpointer.output_format: gguf` with src/checkpoint (which sits below this
 * area): every folder holding a full model also gets `model.gguf`, in the weights' dtype, with
 * the tokenizer of `checkpoint_dir`. Imported (for its side effect) by src/components.ts.
 */
import { basename, join } from "node:path";
import { registerOutputFormat } from "../checkpoint/checkpointer.ts";
import { findTokenizerFile } from "../checkpoint/hf_folder.ts";
import { TuneError } from "../errors.ts";
import { exportGguf } from "./gguf_export.ts";
import { familyOfHfArchitecture, GGUF_FAMILIES } from "./gguf_families.ts";
import { tokenizerMetadata } from "./gguf_tokenizer.ts";

registerOutputFormat("gguf", {
  check(checkpointDir) {
    if (!findTokenizerFile(checkpointDir)) {
      throw new TuneError(
        `checkpointer.output_format=gguf needs the model's tokenizer file in checkpoint_dir ` +
          `${checkpointDir} (tokenizer.json, tokenizer.model or tokenizer.bin)`,
      );
    }
  },
  write(r) {
    const family = r.hfArchitecture
      ? familyOfHfArchitecture(r.hfArchitecture)
      : GGUF_FAMILIES.find((f) => f.arch === "llama");
    if (!family) throw new TuneError(`output_format gguf: no GGUF mapping for ${r.hfArchitecture}`);
    const first = [...r.stateDict.values()].find((t) => t.shape.length === 2);
    exportGguf(join(r.dir, "model.gguf"), r.stateDict, r.config, {
      family,
      dtype: first?.sourceDtype ?? "f32",
      tokenizer: tokenizerMetadata(r.checkpointDir, r.config.vocabSize, family.bpePre),
      name: basename(r.outputDir),
    });
  },
});
