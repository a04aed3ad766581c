/**
 * tune.training.Llama2cCheckpointer: loads a llama2.c `.bin` (checkpoint_files[0], default
 * model.bin; reader in llama2c.ts) and saves `epoch_<N>/model.bin` (version 1, fp32).
 */
import { join } from "node:path";
import { type CheckpointerOptions, FunctionCheckpointer } from "./checkpointer.ts";
import { readLlama2c, writeLlama2c } from "./llama2c.ts";
import { validateStateDict } from "./validate.ts";

/** llama2.c checkpointer (same keys and output layout as the others). */
export class Llama2cCheckpointer extends FunctionCheckpointer {
  constructor(options: CheckpointerOptions) {
    super(options, {
      load: (o, dir) => {
        const path = dir
          ? join(dir, "model.bin")
          : join(o.checkpointDir, o.checkpointFiles[0] ?? "model.bin");
        const m = readLlama2c(path);
        validateStateDict(m.stateDict, m.config, path);
        return { stateDict: m.stateDict, config: m.config };
      },
      save: (dir, sd, cfg) => writeLlama2c(join(dir, "model.bin"), cfg, sd, { version: 1 }),
      hasModel: (dir) => {
        try {
          return Deno.statSync(join(dir, "model.bin")).isFile;
        } catch {
          return false;
        }
      },
    });
  }
}
