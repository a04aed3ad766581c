/**
 * A Llama-family decoder over the op interface, llm.c style: every buffer is allocated
 * once for a given (B, T), forward is a straight list of op calls and backward the same
 * list reversed. Base weights live in one flat ParamStore; with LoRA the base is frozen
 * and the adapters live in a second, trainable store (so AdamW is one call over it).
 *
 * Training runs through one entry, `trainStep(batch, head)`, whose loss head (loss_heads.ts)
 * turns logits into the loss and d(loss)/d(logits); evaluation through `evalLosses`. Both
 * are one list of op calls with hook points between parameter groups: a sharded
 * (groupWindows) model gathers and reduces there, a whole one passes (NO_GROUP_HOOKS), and
 * the synchronous entries run the same list without awaiting. Generation is inference.ts,
 * the modules' wiring (LoRA/DoRA included) build.ts.
 */
import type { Backend, DeviceBuffer } from "../../backend/ops.ts";
import type { StateDict } from "../../params/state_dict.ts";
import { TuneError } from "../../errors.ts";
import {
  type ActDims,
  Allocator,
  allocBackwardScratch,
  type BackwardScratch,
  type LayerLinear,
} from "../../modules/activations.ts";
import { mixSeed } from "../../params/random.ts";
import { ParamStore } from "../../params/store.ts";
import type { Nf4Store } from "../../quant/nf4_store.ts";
import { createQloraBase, loadNf4Weights, withDequantized } from "../../quant/qlora_base.ts";
import type { ModelSpec } from "../model_spec.ts";
import { checkNoExtra, initLoraWeights, loadAdapters, loadBase, mergeAdapters } from "./weights.ts";
import { BatchInputs, type BatchOptions, type TrainBatch } from "./batch_inputs.ts";
import { attentionProbsFloats, createLayerStash, type LayerStash } from "./activation_stash.ts";
import { buildDecoder, type DecoderParts } from "./build.ts";
import { embedScaleValue, headSize, type LlamaConfig } from "./config.ts";
import { KvInference } from "./inference.ts";
import { writeRandomBase } from "./init.ts";
import { baseLayout, layerLinears, loraLayout } from "./layout.ts";
import {
  crossEntropyHead,
  distillHead,
  type DistillLossResult,
  type DistillTargets,
  type LossHead,
  type LossResult,
  OutputHead,
  preferenceHead,
  sequenceSums,
  type SequenceWeigher,
  type WeightedLossResult,
} from "./loss_heads.ts";
import {
  type GroupHooks,
  type LlamaOptions,
  type MemoryReport,
  NO_GROUP_HOOKS,
} from "./options.ts";

export type { BatchOptions, TrainBatch } from "./batch_inputs.ts";
export type { GroupHooks, LlamaOptions, MemoryReport } from "./options.ts";
export type {
  DistillLossResult,
  DistillTargets,
  LossHead,
  LossResult,
  SequenceWeigher,
  WeightedLossResult,
} from "./loss_heads.ts";
export { crossEntropyHead, distillHead, preferenceHead } from "./loss_heads.ts";

/** Result of `evalLosses`. */
export interface EvalLosses extends LossResult {
  /** (B) summed token losses of each sequence (DPO's reference log-probabilities negated). */
  seqLoss: Float64Array;
  /**
   * (B*T) each target's loss (0 where -100), downloaded on call; valid until the model's
   * next call (GRPO's per-token reference and old log-probabilities negated).
   */
  rowLoss(): Float32Array;
}

/** Options of `evalLosses`. */
export interface EvalOptions {
  /** False runs the frozen base without the LoRA adapters (DPO's reference model). */
  adapters?: boolean;
}

/** A point between parameter groups where a sharded model gathers or reduces. */
type HookPoint =
  | { group: string; phase: "forward" | "backward" }
  | { backwardDone: string };

/** Build a Llama model (base weights zero until `loadStateDict` or `initRandom`). */
export function createLlama(backend: Backend, spec: ModelSpec, opts: LlamaOptions): LlamaModel {
  return new LlamaModel(backend, spec, opts);
}

/** A Llama decoder with its parameters, activations and (optional) KV caches. */
export class LlamaModel {
  readonly cfg: LlamaConfig;
  readonly B: number;
  readonly T: number;
  readonly checkpointing: boolean;
  /** False for an inference-only model (see LlamaOptions.training). */
  readonly training: boolean;
  /** Base weights; trainable (with grads and AdamW moments) unless the spec has LoRA. */
  readonly base: ParamStore;
  /** QLoRA: the decoder linears' base weights in NF4 (not in `base`), or null. */
  readonly nf4: Nf4Store | null;
  /** LoRA adapters (trainable), or null. */
  readonly adapters: ParamStore | null;
  /** Hooks of a model built with `groupWindows` (set by the sharded optimizer). */
  groupHooks: GroupHooks | null = null;
  readonly #be: Backend;
  readonly #seed: number;
  readonly #al: Allocator;
  readonly #p: DecoderParts;
  readonly #head: OutputHead;
  readonly #in: BatchInputs;
  readonly #inf: KvInference;
  readonly #st: LayerStash; // layer inputs (N, C) and activations, on the device or offloaded
  readonly #lnf: DeviceBuffer; // (N, C)
  readonly #rstdf: DeviceBuffer; // (N)
  readonly #sc: BackwardScratch | null; // null for an inference-only model
  readonly #dresid: DeviceBuffer | null; // (N, C), null for an inference-only model
  /** Embedding multiplier: sqrt(dim) in the activation dtype for Gemma, else 1. */
  readonly #embedScale: number;
  readonly #windowed: boolean;
  #microStep = 0;
  #adaptersOff = false;

  constructor(backend: Backend, readonly spec: ModelSpec, opts: LlamaOptions) {
    const cfg = spec.config;
    this.cfg = cfg;
    this.#be = backend;
    this.B = opts.batch;
    this.T = opts.seqLen;
    this.checkpointing = opts.activationCheckpointing ?? false;
    const training = this.training = opts.training ?? true;
    this.#seed = opts.seed ?? 0;
    if (!Number.isInteger(this.B) || this.B <= 0 || !Number.isInteger(this.T) || this.T <= 0) {
      throw new TuneError(`batch size and sequence length must be positive integers`);
    }
    if (this.T > cfg.maxSeqLen) {
      throw new TuneError(
        `sequence length ${this.T} exceeds the model's max_seq_len ${cfg.maxSeqLen}; lower max_seq_len of the dataset`,
      );
    }
    const N = this.B * this.T;
    const chunks = opts.logitChunks ?? 1;
    if (!Number.isInteger(chunks) || chunks < 1) {
      throw new TuneError(`num_output_chunks must be a positive integer, got ${chunks}`);
    }
    const chunkRows = Math.ceil(N / Math.min(chunks, N));
    const lora = spec.lora;
    const moments = opts.optimizerMoments ?? true;
    this.#windowed = (opts.groupWindows ?? false) !== false;
    if (this.#windowed && !training) throw new Error("groupWindows needs a training model");
    // a tied embedding is the head's output weight: its slot must differ from the head's
    const windows = this.#windowed
      ? {
        slotOf: (g: string) => (cfg.tiedEmbeddings && g === "tok_embeddings" ? 1 : 0),
        multipleOf: typeof opts.groupWindows === "number" ? opts.groupWindows : 1,
      }
      : null;
    // QLoRA: the decoder linears live in an NF4 store, the rest of the base in `base`
    const full = baseLayout(cfg);
    const qlora = lora?.quantizeBase
      ? createQloraBase(backend, full, nf4Names(cfg), {
        sharded: this.#windowed && (opts.shardFrozenBase ?? false),
      })
      : null;
    this.nf4 = qlora?.nf4 ?? null;
    this.base = new ParamStore(
      backend,
      qlora?.layout ?? full,
      lora === null && training,
      lora ? (opts.frozenDtype ?? "f32") : "f32",
      moments,
      lora === null || opts.shardFrozenBase ? windows : null,
    );
    const act = opts.activationDtype ?? "f32";
    this.#embedScale = embedScaleValue(cfg, act);
    this.adapters = lora
      ? new ParamStore(backend, loraLayout(cfg, lora), training, "f32", moments, windows)
      : null;
    const al = this.#al = new Allocator(backend);
    const p = this.#p = buildDecoder(backend, al, cfg, lora, this, {
      N,
      chunkRows,
      T: this.T,
      training,
      act,
      windowed: this.#windowed,
    });
    const dims: ActDims = {
      B: this.B,
      T: this.T,
      C: cfg.dim,
      NH: cfg.nHeads,
      NKV: cfg.nKvHeads,
      HS: headSize(cfg),
      H: cfg.hiddenDim,
      qkNorm: cfg.qkNorm ?? false,
      postNorms: cfg.postNorms ?? false,
    };
    const ranks: Partial<Record<LayerLinear, number>> = {};
    for (const s of layerLinears(cfg, 0)) {
      if (p.adapted.has(s.prefix)) ranks[s.key as LayerLinear] = p.rank;
    }
    this.#st = createLayerStash(backend, al, {
      dims,
      ranks,
      act,
      nLayers: cfg.nLayers,
      training,
      checkpointing: this.checkpointing,
      offload: opts.activationOffloading ?? false,
      probs: training
        ? attentionProbsFloats(backend, dims, this.checkpointing ? 1 : cfg.nLayers)
        : 0,
    });
    this.#lnf = al.alloc("activations", N * cfg.dim, act);
    this.#rstdf = al.alloc("activations", N);
    const V = cfg.vocabSize, L = cfg.nLayers;
    const fs = cfg.finalSoftcap; // Gemma 2's logit soft-cap
    const headDims = { B: this.B, T: this.T, C: cfg.dim, V, L, chunkRows, finalSoftcap: fs };
    this.#head = new OutputHead(p.output, headDims, al, p.rank, act);
    this.#in = new BatchInputs(backend, al, this.B, this.T, V);
    this.#sc = training ? allocBackwardScratch(al, "scratch", dims, act) : null;
    this.#dresid = training ? al.alloc("scratch", N * cfg.dim) : null;
    // the backend's fused decode step reads plain fp32 base weights in place
    const fusable = spec.lora === null && act === "f32" && !this.#windowed;
    this.#inf = new KvInference(
      backend,
      p,
      cfg,
      dims,
      act,
      this.#embedScale,
      fusable ? this.base : null,
    );
  }

  /**
   * Micro-batches trained so far; it keys LoRA dropout masks. Save it with a checkpoint and
   * set it on resume so the masks (and losses) continue bitwise.
   */
  get dropoutStep(): number {
    return this.#microStep;
  }
  set dropoutStep(n: number) {
    if (!Number.isInteger(n) || n < 0) {
      throw new Error(`dropoutStep must be a non-negative integer`);
    }
    this.#microStep = n;
  }

  /** The store the optimizer updates: the adapters with LoRA, else the base weights. */
  get trainable(): ParamStore {
    return this.adapters ?? this.base;
  }

  /** Names of the trainable tensors. */
  trainableNames(): string[] {
    return this.trainable.layout.entries.map((e) => e.name);
  }

  /**
   * Load weights from a StateDict in tune names. Every base tensor must be present with its
   * exact shape (TuneError naming the tensor otherwise). Adapter tensors are loaded when the
   * dict has them; when it has none, adapters get fresh torchtune-style initial values. DoRA
   * magnitudes missing from a dict that has the LoRA matrices are initialised from the loaded
   * weights (torchtune's initialize_dora_magnitude).
   */
  loadStateDict(sd: StateDict, opts: { strict?: boolean } = {}): void {
    loadBase(this.base, sd, this.spec.name);
    if (this.nf4) loadNf4Weights(this.nf4, sd, this.spec.name);
    if (this.adapters) {
      const got = loadAdapters(this.adapters, sd);
      if (got === "fresh") this.initAdapters(this.#seed);
      else if (got === "no-magnitudes") this.#initDoraMagnitudes();
    }
    if (opts.strict ?? true) {
      const nf4 = this.nf4;
      const rest = nf4 ? new Map([...sd].filter(([n]) => !nf4.has(n))) : sd;
      checkNoExtra(rest, [this.base, this.adapters], this.spec.name);
    }
  }

  /** Deterministic random base weights (and fresh adapters) for `seed`. */
  initRandom(seed: number): void {
    writeRandomBase(this.cfg, this.base, this.nf4, seed);
    if (this.adapters) this.initAdapters(mixSeed(seed, 0x10a));
  }

  /**
   * Fresh adapters: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform, a=sqrt(5)), B = 0; DoRA
   * magnitudes = ||W|| per row of the current base weights.
   */
  initAdapters(seed: number): void {
    if (!this.adapters || !this.spec.lora) return;
    initLoraWeights(this.adapters, this.cfg, this.spec.lora, seed);
    this.#initDoraMagnitudes();
  }

  /**
   * magnitude = ||W + s B A|| per row of every DoRA layer, from the current weights. With
   * group windows (sharded, before the ranks take their slices) the layers read and write
   * their groups' slots: each adapter group's slots (and its base weights' groups) are filled
   * from the full values once, its layers' magnitudes taken, and the adapters copied back.
   */
  #initDoraMagnitudes(): void {
    const be = this.#be, ad = this.adapters!, base = this.base, doras = this.#p.doras;
    if (!ad.windows) {
      for (const { dora, w } of doras) dora.initMagnitude(be, w);
      return;
    }
    const groupOf = (d: (typeof doras)[number]) => ad.layout.get(d.magnitude).group;
    for (const g of new Set(doras.map(groupOf))) {
      const here = doras.filter((d) => groupOf(d) === g);
      ad.copyGroup(g, "toSlot");
      if (base.windows) {
        for (const bg of new Set(here.map((d) => base.layout.get(d.weight).group))) {
          base.copyGroup(bg, "toSlot");
        }
      }
      for (const { dora, w } of here) dora.initMagnitude(be, w);
      ad.copyGroup(g, "toFull");
    }
  }

  /** Base weights and adapters as one StateDict (tune names). */
  stateDict(): StateDict {
    const sd = this.#baseStateDict();
    if (this.adapters) { for (const [n, t] of this.adapters.toStateDict()) sd.set(n, t); }
    return sd;
  }

  /** Only the adapters (empty without LoRA). */
  adapterStateDict(): StateDict {
    return this.adapters ? this.adapters.toStateDict() : new Map();
  }

  /**
   * Base weights with every adapter merged in (see weights.ts `mergeAdapters`). Without an
   * NF4 base the tensors are lazy (see params/state_dict.ts): each is read from the model, and
   * merged, when used, so a checkpoint save streams them out without a copy of the whole
   * model; use them before the weights change (the next step).
   */
  mergedStateDict(): StateDict {
    const sd = this.nf4 ? this.#baseStateDict() : this.#lazyBaseStateDict();
    const lora = this.spec.lora;
    if (!this.adapters || !lora) return sd;
    return mergeAdapters(sd, this.adapters.toStateDict(), this.cfg, lora);
  }

  /** The base weights as lazy tensors over the base store. */
  #lazyBaseStateDict(): StateDict {
    return new Map(this.base.layout.entries.map((e) => [e.name, this.base.lazyTensor(e.name)]));
  }

  /** The base weights on the host; an NF4 base dequantized (as torchtune saves QLoRA). */
  #baseStateDict(): StateDict {
    const sd = this.base.toStateDict();
    return this.nf4 ? withDequantized(sd, this.nf4, baseLayout(this.cfg)) : sd;
  }

  /** Zero the trainable gradients. */
  zeroGrad(): void {
    this.trainable.zeroGrad();
  }

  /**
   * Run `fn` with every LoRA adapter switched off: the frozen base alone (DPO's reference
   * model, torchtune's disable_adapter). Training calls inside `fn` throw. When `fn`
   * returns a promise, the adapters come back on once it settles.
   */
  withAdaptersDisabled<T>(fn: () => T): T {
    const loras = this.#p.loras;
    if (loras.length === 0) {
      throw new Error("withAdaptersDisabled() needs a model with LoRA adapters");
    }
    const was = this.#adaptersOff;
    const restore = () => {
      this.#adaptersOff = was;
      for (const l of loras) l.enabled = !was;
    };
    this.#adaptersOff = true;
    for (const l of loras) l.enabled = false;
    let result: T;
    try {
      result = fn();
    } catch (e) {
      restore();
      throw e;
    }
    if (result instanceof Promise) return result.finally(restore) as T;
    restore();
    return result;
  }

  // ---- the training and eval entries ---------------------------------------------------

  /**
   * Forward and backward of one micro-batch in training mode (LoRA dropout on), ending in
   * `head` (crossEntropyHead, distillHead, preferenceHead of loss_heads.ts). Gradients of
   * the head's loss ACCUMULATE into the trainable store's grads (call zeroGrad between
   * optimizer steps); on a sharded (groupWindows) model each group's land in its window
   * and go to `groupHooks.afterGroupBackward` right after its backward instead.
   */
  trainStep<R>(batch: TrainBatch, head: LossHead<R>): Promise<R> {
    return this.#runAsync(this.#trainOps(batch, head));
  }

  /**
   * Summed cross-entropy of `batch`'s targets, in total and per sequence, without gradients
   * (eval mode: no dropout); `adapters: false` runs the frozen base alone.
   */
  evalLosses(batch: TrainBatch, opts: EvalOptions = {}): Promise<EvalLosses> {
    const run = async () => {
      const tokens = await this.#runAsync(this.#evalOps(batch.tokens, batch.targets, batch));
      const losses = this.#head.losses;
      return {
        lossSum: this.#be.sum(losses),
        tokens,
        seqLoss: this.#sequenceSums(),
        rowLoss: () => (this.#be.download(losses) as Float32Array).slice(),
      };
    };
    return opts.adapters === false ? this.withAdaptersDisabled(run) : run();
  }

  // ---- synchronous entries (whole weights), the same op lists --------------------------

  /**
   * Forward of a (B, T) batch of token ids (eval mode: no dropout). Returns the logits
   * buffer (B, T, V), valid until the next call.
   */
  forward(tokens: Int32Array, batch: BatchOptions = {}): DeviceBuffer {
    if (this.#head.d.chunkRows < this.B * this.T) {
      throw new Error("forward() returns all logits: build the model with logitChunks 1");
    }
    this.#runSync(this.#evalOps(tokens, null, batch));
    return this.#head.logits;
  }

  /** Summed cross-entropy of targets (B, T) given tokens (B, T), no gradients (eval mode). */
  loss(tokens: Int32Array, targets: Int32Array, batch: BatchOptions = {}): LossResult {
    const count = this.#runSync(this.#evalOps(tokens, targets, batch));
    return { lossSum: this.#be.sum(this.#head.losses), tokens: count };
  }

  /** Summed cross-entropy of each sequence (B), no gradients (eval mode). */
  sequenceLosses(tokens: Int32Array, targets: Int32Array, batch: BatchOptions = {}): Float64Array {
    this.#runSync(this.#evalOps(tokens, targets, batch));
    return this.#sequenceSums();
  }

  /**
   * `trainStep` with crossEntropyHead(gradScale), synchronously. Pass gradScale =
   * 1 / (tokens counted over the whole step) for torchtune's mean loss.
   */
  lossAndBackward(
    tokens: Int32Array,
    targets: Int32Array,
    gradScale: number,
    batch: BatchOptions = {},
  ): LossResult {
    return this.#runSync(
      this.#trainOps({ ...batch, tokens, targets }, crossEntropyHead(gradScale)),
    );
  }

  /** `trainStep` with distillHead(gradScale, distill), synchronously. */
  distillLossAndBackward(
    tokens: Int32Array,
    targets: Int32Array,
    gradScale: number,
    distill: DistillTargets,
    batch: BatchOptions = {},
  ): DistillLossResult {
    const head = distillHead(gradScale, distill);
    return this.#runSync(this.#trainOps({ ...batch, tokens, targets }, head));
  }

  /** `trainStep` with preferenceHead(weigh), synchronously (needs logitChunks 1). */
  weightedLossAndBackward(
    tokens: Int32Array,
    targets: Int32Array,
    weigh: SequenceWeigher,
    batch: BatchOptions = {},
  ): WeightedLossResult {
    return this.#runSync(this.#trainOps({ ...batch, tokens, targets }, preferenceHead(weigh)));
  }

  /** Bytes held by this model, by kind. */
  memory(): MemoryReport {
    const by = this.#al.bytesBy;
    const t = this.trainable;
    const p = this.base.paramBytes() + (this.adapters ? this.adapters.paramBytes() : 0) +
      (this.nf4?.bytes() ?? 0);
    return {
      parameters: p,
      gradients: t.gradBytes(),
      optimizer: t.m ? t.layout.total * 8 : 0,
      activations: by.get("activations") ?? 0,
      scratch: by.get("scratch") ?? 0,
      inference: this.#inf.bytes,
      offloaded: this.#st.hostBytes,
    };
  }

  // ---- generation with a KV cache (inference.ts) -------------------------------------

  /** Allocate KV caches for `batch` sequences of up to `capacity` positions (replaces old ones). */
  setupCaches(batch: number, capacity: number): void {
    this.#inf.setup(batch, capacity);
  }

  /** Current position of the KV cache (tokens processed since the last prefill). */
  get cachePosition(): number {
    return this.#inf.position;
  }

  /**
   * Start generation: run `tokens` (B, T) from position 0, filling the caches. Returns the
   * logits (B, V) of the last position, valid until the next call.
   */
  prefill(tokens: Int32Array): DeviceBuffer {
    this.#needFullWeights();
    return this.#inf.prefill(tokens);
  }

  /** One new token per sequence (B) at the cache position; logits (B, V). See KvInference.decode. */
  decodeStep(tokens: Int32Array, live?: Uint8Array): DeviceBuffer {
    return this.#inf.decode(tokens, live);
  }

  /** Release every buffer of the model. */
  free(): void {
    this.#st.free();
    this.#inf.free();
    this.#al.freeAll();
    this.base.free();
    this.nf4?.free();
    this.adapters?.free();
    this.#be.free(this.#p.rope.cos);
    this.#be.free(this.#p.rope.sin);
    this.#in.free();
  }

  // ---- the op lists ------------------------------------------------------------------

  #needFullWeights(): void {
    if (this.#windowed) {
      throw new Error(
        "this model keeps its weights sharded (groupWindows): train with trainStep",
      );
    }
  }

  /** Run an op list to its end without awaiting hooks (whole weights only). */
  #runSync<R>(ops: Generator<HookPoint, R>): R {
    this.#needFullWeights();
    for (;;) {
      const r = ops.next();
      if (r.done) return r.value;
      if ("backwardDone" in r.value && this.groupHooks) {
        throw new Error("groupHooks set: use trainStep");
      }
    }
  }

  /** Run an op list, awaiting the group hooks (none for whole weights) at each point. */
  async #runAsync<R>(ops: Generator<HookPoint, R>): Promise<R> {
    // whole weights take hooks too when set (optimizer_in_bwd steps each group in backward)
    const h = this.groupHooks ?? NO_GROUP_HOOKS;
    if (this.#windowed && !this.groupHooks) {
      throw new Error("a model built with groupWindows needs groupHooks set before it runs");
    }
    for (;;) {
      const r = ops.next();
      if (r.done) return r.value;
      const e = r.value;
      if ("group" in e) await h.beforeGroup(e.group, e.phase);
      else if (this.trainable.hasGroup(e.backwardDone)) await h.afterGroupBackward(e.backwardDone);
    }
  }

  /** Upload a batch and hand its packing to every layer's attention; the target count. */
  #upload(tokens: Int32Array, targets: Int32Array | null, batch: BatchOptions): number {
    const count = this.#in.upload(tokens, targets);
    const packing = this.#in.packing(batch, this.#p.rope.maxSeqLen);
    for (const layer of this.#p.layers) layer.attn.packing = packing;
    return count;
  }

  /** Embedding, layers and final norm into lnf (N, C), a hook point before each group. */
  *#forwardOps(seed: number | null, train = false): Generator<HookPoint, void> {
    const be = this.#be, st = this.#st;
    const { N, C, L } = this.#nv();
    yield { group: "tok_embeddings", phase: "forward" };
    be.embeddingForward(st.resid(0), this.#in.tokens, this.#p.tokEmb, N, C, this.#in.hostTokens); // (N, C)
    if (this.#embedScale !== 1) be.scale(st.resid(0), this.#embedScale);
    for (let l = 0; l < L; l++) {
      yield { group: `layers.${l}`, phase: "forward" };
      const ls = seed === null ? null : mixSeed(seed, l);
      const acts = st.acts(l);
      // no backward reads an eval forward's attention probabilities: it keeps none
      const a = train || acts.probs === undefined ? acts : { ...acts, probs: undefined };
      this.#p.layers[l].forward(be, st.resid(l + 1), st.resid(l), a, this.B, this.T, ls);
      if (train) st.afterForward(l); // its saved values may go to host memory
    }
    // the head runs its forward and backward back to back: its gathered values stay (as
    // does a tied embedding, in its own slot since the embedding forward)
    yield { group: "head", phase: "forward" };
    this.#p.norm.forward(be, this.#lnf, this.#rstdf, st.resid(L), N); // (N, C)
  }

  /**
   * Forward and per-row losses into the head's `losses` (targets given) or the logits
   * (targets null), no gradients; returns the number of counted targets.
   */
  *#evalOps(
    tokens: Int32Array,
    targets: Int32Array | null,
    batch: BatchOptions,
  ): Generator<HookPoint, number> {
    const count = this.#upload(tokens, targets, batch);
    yield* this.#forwardOps(null);
    const targetBuf = targets ? this.#in.targets : null;
    this.#head.eval(this.#be, this.#lnf, targetBuf, this.#in.hostTargets);
    return count;
  }

  /** (B) summed per-row losses of each sequence of the last step. */
  #sequenceSums(): Float64Array {
    return sequenceSums(this.#be, this.#head.losses, this.B, this.T);
  }

  /**
   * Forward, loss head and backward of one micro-batch. Windowed: each group's gradient
   * window is zeroed before its backward, and a hook point follows it.
   */
  *#trainOps<R>(batch: TrainBatch, head: LossHead<R>): Generator<HookPoint, R> {
    const sc = this.#sc, dx = this.#dresid; // dx (N, C): gradient of the residual stream
    if (!sc || !dx) {
      throw new Error(
        "lossAndBackward() needs a training model: this one was built with training: false (inference only)",
      );
    }
    if (this.#adaptersOff) throw new Error("cannot train inside withAdaptersDisabled()");
    const { N, C, L, V } = this.#nv();
    head.check(N, V, this.#head.d.chunkRows);
    const be = this.#be;
    const t = this.trainable;
    const zero = (g: string) => {
      if (this.#windowed && t.hasGroup(g)) be.fill(t.groupGrads(g), 0);
    };
    const tied = this.cfg.tiedEmbeddings;
    const count = this.#upload(batch.tokens, batch.targets, batch);
    this.#microStep++;
    const seed = this.spec.lora && this.spec.lora.dropout > 0
      ? mixSeed(this.#seed, this.#microStep)
      : null;
    yield* this.#forwardOps(seed, true);
    // ---- output projection, loss and their backward, chunk by chunk ----
    zero("head");
    if (tied) zero("tok_embeddings");
    be.fill(sc.dln, 0);
    this.#head.train(be, this.#lnf, sc.dln, seed, this.#in.targets, this.#in.hostTargets, head);
    be.fill(dx, 0);
    const st = this.#st;
    this.#p.norm.backward(be, dx, sc.dln, st.resid(L), this.#rstdf, N);
    yield { backwardDone: "head" };
    // ---- layers, last to first: (gather,) recompute, backward, (reduce) ----
    for (let l = L - 1; l >= 0; l--) {
      const g = `layers.${l}`;
      yield { group: g, phase: "backward" };
      zero(g);
      st.beforeBackward(l); // an offloaded layer's saved values come back
      const acts = st.acts(l), input = st.resid(l);
      const ls = seed === null ? null : mixSeed(seed, l);
      const layer = this.#p.layers[l];
      if (this.checkpointing) {
        // recompute the layer from its saved input into the shared buffers
        // (its output lands in resid[l+1] again, which backward no longer needs)
        layer.forward(be, st.resid(l + 1), input, acts, this.B, this.T, ls);
      }
      layer.backward(be, dx, input, acts, sc, this.B, this.T, ls);
      yield { backwardDone: g };
    }
    // the embedding backward needs no values; a tied embedding's gradient already holds the head's part
    if (this.#p.dTokEmb) {
      if (!tied) zero("tok_embeddings");
      if (this.#embedScale !== 1) be.scale(dx, this.#embedScale); // d(e * s)/de = s
      be.embeddingBackward(this.#p.dTokEmb, dx, this.#in.tokens, N, C, this.#in.hostTokens);
      yield { backwardDone: "tok_embeddings" };
    }
    return head.result(be, {
      losses: this.#head.losses,
      extraRows: this.#head.extraRows,
      tokens: count,
    });
  }

  #nv() {
    return { N: this.B * this.T, V: this.cfg.vocabSize, C: this.cfg.dim, L: this.cfg.nLayers };
  }
}

/** Weights an NF4 base keeps in NF4: every decoder layer's linears (torchtune's quantize_base). */
function nf4Names(cfg: LlamaConfig): string[] {
  const names: string[] = [];
  for (let i = 0; i < cfg.nLayers; i++) {
    for (const s of layerLinears(cfg, i)) names.push(`${s.prefix}.weight`);
  }
  return names;
}
