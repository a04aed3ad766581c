/**
 * `torchtune.training.setup_torch_profiler`, the `profiler` section of torchtune's configs.
 * Every shipped torchtune config names it with `enabled: False`, which means no profiling,
 * and that is what tune does. `enabled: True` asks for the PyTorch profiler's trace, which
 * does not exist here: it is refused in one line naming tune's own per-op profiles.
 */
import { registerComponent } from "../config/registry.ts";
import { TuneError } from "../errors.ts";

/** What the recipe gets: profiling is off (the only setting tune honours). */
export interface ProfilerSettings {
  enabled: false;
}

const TORCH_ONLY = "a torch.profiler setting; used only with enabled: True";

export const torchProfilerComponent = registerComponent<ProfilerSettings>({
  name: "torchtune.training.setup_torch_profiler",
  aliases: ["setup_torch_profiler"],
  kind: "profiler",
  doc: "torchtune's profiler section: enabled: False (no profiling) is accepted; tune's own " +
    "per-op profiles are TUNE_CUDA_PROFILE=1 (GPU) and bench/profile.ts (CPU)",
  params: {
    enabled: { type: "bool", default: false, doc: "only False: see the builder's doc" },
    cpu: { type: "bool", default: true, doc: TORCH_ONLY },
    cuda: { type: "bool", default: true, doc: TORCH_ONLY },
    profile_memory: { type: "bool", default: false, doc: TORCH_ONLY },
    with_stack: { type: "bool", default: false, doc: TORCH_ONLY },
    record_shapes: { type: "bool", default: true, doc: TORCH_ONLY },
    with_flops: { type: "bool", default: false, doc: TORCH_ONLY },
    wait_steps: { type: "int", default: 5, doc: TORCH_ONLY },
    warmup_steps: { type: "int", default: 3, doc: TORCH_ONLY },
    active_steps: { type: "int", default: 2, doc: TORCH_ONLY },
    num_cycles: { type: "int", default: 1, doc: TORCH_ONLY },
    output_dir: { type: "string", default: null, doc: TORCH_ONLY },
  },
  build(args) {
    if (args.enabled) {
      throw new TuneError(
        "profiler.enabled=True asks for the PyTorch profiler, which tune does not have; set " +
          "profiler.enabled=False and use TUNE_CUDA_PROFILE=1 (a per-kernel GPU table at exit) " +
          "or `deno run -A bench/profile.ts` (time per CPU op)",
      );
    }
    return { enabled: false };
  },
});
