/**
 * torchtune's memory-saving recipe options. enable_activation_offloading (saved activations
 * copied to host memory between forward and backward, src/models/llama/activation_stash.ts)
 * runs on CUDA and is refused in one line on the CPU, where the activations already live in
 * host memory; fsdp_cpu_offload (sharded parameters, gradients and optimizer state kept in
 * host memory, src/training/sharded.ts) runs on CUDA and is refused in one line on the CPU;
 * optimizer_in_bwd is implemented (src/training/optimizer_in_bwd.ts) and checked here with
 * torchtune's refusals.
 */
import { TuneError } from "../errors.ts";
import { checkOptimizerInBwd, type InBackwardKeys } from "./optimizer_in_bwd.ts";

/** The options a recipe's config may set. */
export interface MemoryOptions extends InBackwardKeys {
  enable_activation_offloading?: boolean;
  fsdp_cpu_offload?: boolean;
  device?: string;
}

/**
 * Test seam, not a setting: TUNE_TEST_FSDP_CPU_OFFLOAD=1 lets fsdp_cpu_offload=True run on
 * device=cpu (the slices on a second CpuBackend), so CPU tests reach every host-state code
 * path with real collectives and compare it bit for bit with the device-state path. Users
 * get the refusal: on the CPU the state is already in host memory.
 */
function hostStateTestSeam(): boolean {
  return Deno.env.get("TUNE_TEST_FSDP_CPU_OFFLOAD") === "1";
}

/** Throw the one-line refusal of an option that is on (or of a combination torchtune refuses). */
export function refuseUnimplementedMemoryOptions(cfg: MemoryOptions): void {
  if (cfg.enable_activation_offloading && cfg.device !== "cuda") {
    throw new TuneError(
      "enable_activation_offloading=True offloads GPU activations to host memory; on device=cpu they are already there, set it to False (enable_activation_checkpointing saves memory on the CPU)",
    );
  }
  if (cfg.fsdp_cpu_offload && cfg.device !== "cuda" && !hostStateTestSeam()) {
    throw new TuneError(
      "fsdp_cpu_offload=True offloads sharded GPU state to host memory; on device=cpu it is already there, set it to False",
    );
  }
  checkOptimizerInBwd(cfg);
}
