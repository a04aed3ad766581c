/**
 * Options and hook interfaces of a Llama model (`createLlama`): what a recipe chooses when
 * it builds one, and what a sharded optimizer plugs into it.
 */

/** Options of `createLlama`. */
export interface LlamaOptions {
  /** Micro-batch size B of training/eval calls. */
  batch: number;
  /** Sequence length T of training/eval calls. */
  seqLen: number;
  /** Save only each layer's input and recompute the layer in backward. */
  activationCheckpointing?: boolean;
  /**
   * Keep what each layer saves for its backward in host memory between its forward and
   * backward, copied on a side stream (torchtune's enable_activation_offloading; a training
   * model on a backend with an activation offloader, src/backend/offload.ts: CUDA). Same
   * results; the device holds rings of 3 residual buffers and 2 activation sets instead of
   * one per layer. Default false.
   */
  activationOffloading?: boolean;
  /** Seed of LoRA adapter initialisation and dropout masks (default 0). */
  seed?: number;
  /**
   * Compute the output projection and loss in this many row chunks (torchtune's
   * num_output_chunks), so only (ceil(B*T / chunks), V) logits exist at a time; default 1.
   * With more than one chunk `forward()` (which returns all logits) is unavailable, and the
   * output adapter's dropout masks are drawn per chunk.
   */
  logitChunks?: number;
  /**
   * Element type of activations, logits, KV caches and backward scratch (default "f32").
   * "bf16" halves their memory on backends that compute in bf16 (CUDA); norms' rstd,
   * attention lse, losses and the residual gradient stay fp32.
   */
  activationDtype?: "f32" | "bf16";
  /** Element type of the frozen base weights under LoRA (default "f32"); trained weights are fp32. */
  frozenDtype?: "f32" | "bf16";
  /**
   * Allocate the AdamW moments in the trainable store (default true). False when a sharded
   * (ZeRO/FSDP) optimizer keeps its rank's slice of them instead; `trainable.m/v` are null.
   */
  optimizerMoments?: boolean;
  /**
   * Build for training (default true). False builds an inference-only model for eval and
   * generation: no gradient buffers, no AdamW moments, no backward scratch, and one shared
   * set of layer activations (no layer's activations outlive its forward); `forward`,
   * `loss`, `prefill` and `decodeStep` work, `lossAndBackward` throws.
   */
  training?: boolean;
  /**
   * FSDP/ZeRO-3: keep the trainable store's values and gradients only in reusable group-sized
   * compute buffers (ParamStore windows) instead of full-size ones. Training and eval then go
   * through the async entries (`trainStep`, `evalLosses`), and `groupHooks` must be set (a sharded optimizer fills
   * each group before it runs and takes its gradients after its backward). A number pads
   * each group's compute buffer to a multiple of it (the world size: in-place collectives).
   * Default false.
   */
  groupWindows?: boolean | number;
  /**
   * With `groupWindows` under LoRA: window the frozen base weights too (a sharded holder of
   * their slices gathers each group through `groupHooks`). Default false: the base is whole.
   */
  shardFrozenBase?: boolean;
}

/**
 * Per-group hooks of a model built with `groupWindows` (FSDP/ZeRO-3). `beforeGroup` is
 * called for every group of the model ("tok_embeddings", "layers.i", "head"): a holder of
 * some store's slices ignores the groups that store lacks (LoRA adapters have no
 * tok_embeddings). `afterGroupBackward` is called for the trainable store's groups only.
 * A model with whole weights runs them too when they are set (optimizer_in_bwd,
 * src/training/optimizer_in_bwd.ts: the gradients are then in the flat `trainable.grads`).
 */
export interface GroupHooks {
  /**
   * Group `name` is about to run (its forward, or its backward including a recomputed
   * forward): its full values must be in `trainable.groupParams(name)` when this resolves.
   */
  beforeGroup(name: string, phase: "forward" | "backward"): Promise<void>;
  /**
   * Group `name`'s backward is done: its gradients (this micro-batch's, scaled) are complete
   * in `trainable.groupGrads(name)`, which the model zeroes before the group's next backward.
   */
  afterGroupBackward(name: string): Promise<void>;
}

/** Bytes held by a model, by kind (all preallocated, so these are also the peaks). */
export interface MemoryReport {
  parameters: number;
  gradients: number;
  optimizer: number;
  /** Saved activations of training/eval calls (layer inputs, per-layer buffers, logits). */
  activations: number;
  /** Backward scratch shared by all layers (and recomputation buffers). */
  scratch: number;
  /** KV caches and buffers of generation (after setupCaches). */
  inference: number;
  /** Page-locked host memory holding offloaded activations (activationOffloading). */
  offloaded: number;
}

/** The hooks of a model whose weights are whole (one process): nothing to gather or reduce. */
export const NO_GROUP_HOOKS: GroupHooks = {
  beforeGroup: () => Promise.resolve(),
  afterGroupBackward: () => Promise.resolve(),
};
