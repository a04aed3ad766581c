/**
 * torchtune's memory-saving recipe options that tune does not implement yet, refused in one
 * line each when switched on (never accepted and ignored): optimizer_in_bwd (stepping each
 * parameter as soon as its gradient is complete) and enable_activation_offloading (saved
 * activations copied to host memory between forward and backward, a CUDA technique: on the
 * CPU the activations already live in host memory).
 */
import { TuneError } from "../errors.ts";

/** The options a recipe's config may set. */
export interface MemoryOptions {
  optimizer_in_bwd?: boolean;
  enable_activation_offloading?: boolean;
  device?: string;
}

/** Throw the one-line refusal of an option that is on. */
export function refuseUnimplementedMemoryOptions(cfg: MemoryOptions): void {
  if (cfg.enable_activation_offloading) {
    throw new TuneError(
      cfg.device === "cpu"
        ? "enable_activation_offloading=True offloads GPU activations to host memory; on device=cpu they are already there, set it to False (enable_activation_checkpointing saves memory on the CPU)"
        : "enable_activation_offloading=True is not implemented on CUDA yet; set it to False and use enable_activation_checkpointing",
    );
  }
  if (cfg.optimizer_in_bwd) {
    throw new TuneError(
      "optimizer_in_bwd=True is not implemented yet; set it to False (bitsandbytes.optim.AdamW8bit cuts optimizer memory to about 2 bytes a parameter)",
    );
  }
}
