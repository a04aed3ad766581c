/**
 * Child process of checkpoint_retention_test.ts: loads a tiny Hugging Face checkpoint and saves
 * it as step_1 ... step_N with keep_last_n_checkpoints; during save number `hang` it stops
 * after the model files are written (prints "HANG" and waits) so the parent can kill it mid-save.
 *
 *   deno run -A tests/_save_child.ts <input> <output> <saves> <keep> <hang|0>
 */
import { FullModelHFCheckpointer } from "../src/checkpoint/checkpointer.ts";
import type { LlamaConfig } from "../src/models/llama/config.ts";
import type { StateDict } from "../src/params/state_dict.ts";

const [input, output, saves, keep, hang] = Deno.args;
let saving = 0;

class HangingCheckpointer extends FullModelHFCheckpointer {
  protected override saveModel(dir: string, sd: StateDict, cfg: LlamaConfig) {
    super.saveModel(dir, sd, cfg);
    if (saving === Number(hang)) {
      console.log("HANG");
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); // until killed
    }
  }
}

const ck = new HangingCheckpointer({
  checkpointDir: input,
  checkpointFiles: [],
  outputDir: output,
  modelType: "LLAMA2",
  adapterCheckpoint: null,
  recipeCheckpoint: null,
  resumeFromCheckpoint: false,
  keepLastNCheckpoints: Number(keep),
});
const { stateDict } = ck.load();
for (saving = 1; saving <= Number(saves); saving++) {
  ck.save({
    stateDict,
    epoch: 0,
    dirName: `step_${saving}`,
    recipeState: {
      step: saving,
      epoch: 0,
      seed: 0,
      dataPosition: saving,
      lrScheduler: { lastStep: saving },
      rng: null,
      tensors: new Map(),
    },
  });
  console.log(`saved step_${saving}`);
}
