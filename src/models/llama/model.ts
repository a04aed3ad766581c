/**
 * A Llama-family decoder over the op interface, llm.c style: every buffer is allocated
 * once for a given (B, T), forward is a straight list of op calls and backward the same
 * list reversed. Base weights live in one flat ParamStore; with LoRA the base is frozen
 * and the adapters live in a second, trainable store (so AdamW is one call over it).
 */
import type { Backend, DeviceBuffer, FusedDecoder } from "../../backend/ops.ts";
import type { StateDict } from "../../params/state_dict.ts";
import { TuneError } from "../../errors.ts";
import {
  type ActDims,
  Allocator,
  allocBackwardScratch,
  allocLayerActs,
  type BackwardScratch,
  type LayerActs,
  type LayerLinear,
} from "../../modules/activations.ts";
import { Attention, type KvCache } from "../../modules/attention.ts";
import { FeedForward } from "../../modules/feed_forward.ts";
import { Linear } from "../../modules/linear.ts";
import { initLoraHost, Lora, type LoraScratch, mergeLoraHost } from "../../modules/lora.ts";
import { Dora, type DoraScratch, mergeDoraHost } from "../../modules/dora.ts";
import { RmsNorm } from "../../modules/rms_norm.ts";
import { type DeviceRope, ropeTables, uploadRope } from "../../modules/rope.ts";
import { DecoderLayer } from "../../modules/transformer.ts";
import { mixSeed, SeededRandom } from "../../params/random.ts";
import { ParamStore } from "../../params/store.ts";
import type { ModelSpec } from "../model_spec.ts";
import { embedScaleValue, headSize, hiddenAct, type LlamaConfig } from "./config.ts";
import { fusedDecoder } from "./fused_decode.ts";
import { randomBaseWeights } from "./init.ts";
import { baseLayout, layerLinears, loraLayout, loraSites } from "./layout.ts";

/** Options of `createLlama`. */
export interface LlamaOptions {
  /** Micro-batch size B of training/eval calls. */
  batch: number;
  /** Sequence length T of training/eval calls. */
  seqLen: number;
  /** Save only each layer's input and recompute the layer in backward. */
  activationCheckpointing?: boolean;
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
   * compute buffers (ParamStore windows) instead of full-size ones. Training then goes
   * through `lossAndBackwardAsync`, and `groupHooks` must be set (a sharded optimizer fills
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

/** Result of a loss evaluation: summed token losses and the number of counted tokens. */
export interface LossResult {
  /** Sum over non-ignored tokens of -log p(target). */
  lossSum: number;
  /** Number of targets that are not -100. */
  tokens: number;
}

/**
 * A preference loss's weights (B) for the sequences of a micro-batch, given their summed
 * token losses (B) from the same forward: the gradient is of sum_b w[b] * seqLoss[b].
 */
export type SequenceWeigher = (seqLoss: Float64Array) => Float64Array;

/** Knowledge-distillation targets of a micro-batch (`distillLossAndBackward`). */
export interface DistillTargets {
  /** (B*T, V) the teacher's logits for the same tokens (e.g. a teacher model's `forward`). */
  teacherLogits: DeviceBuffer;
  /** Weight r of the KD loss: the loss is (1 - r) class loss + r KD loss. */
  kdRatio: number;
}

/** Result of `distillLossAndBackward`: summed class and KD token losses. */
export interface DistillLossResult extends LossResult {
  /** Sum over non-ignored tokens of -sum_v softmax(teacher)_v log softmax(student)_v. */
  kdLossSum: number;
}

/** How the head turns logits into the loss of a training step (besides plain cross-entropy). */
interface HeadLoss {
  weigh?: SequenceWeigher;
  distill?: DistillTargets;
}

/** Result of `weightedLossAndBackward`. */
export interface WeightedLossResult {
  /** (B) summed token losses of each sequence: -log p(sequence's targets). */
  seqLoss: Float64Array;
  /** (B) the weights `weigh` chose. */
  weights: Float64Array;
  /** (B) sum of the logits over each sequence's counted positions (all V of each). */
  logitSums: Float64Array;
  /** (B) counted targets (not -100) of each sequence. */
  tokens: Int32Array;
}

/**
 * Packed samples in a batch (torchtune's PackedDataset): each optional, (B, T) row-major.
 * Omitted: plain causal attention and positions 0..T-1 (bitwise the unpacked model).
 */
export interface BatchOptions {
  /** Segment id of every token: a token attends only to earlier tokens of its own segment. */
  segments?: Int32Array | null;
  /** Rope position of every token (restarting at 0 in each sample; torchtune's input_pos). */
  positions?: Int32Array | null;
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
}

interface InferenceState {
  B: number;
  capacity: number;
  pos: number;
  caches: KvCache[];
  acts: LayerActs; // sized (B, capacity)
  resid: [DeviceBuffer, DeviceBuffer]; // (B*capacity, C) each
  tokens: DeviceBuffer; // (B*capacity) i32
  last: DeviceBuffer; // (B, C)
  lnLast: DeviceBuffer; // (B, C)
  rstdLast: DeviceBuffer; // (B)
  logits: DeviceBuffer; // (B, V)
  headHs: DeviceBuffer | null; // (B, r)
  alloc: Allocator;
  /** The backend's fused decode step (fused_decode.ts), or null: decode runs op by op. */
  decoder: FusedDecoder | null;
}

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
  /** LoRA adapters (trainable), or null. */
  readonly adapters: ParamStore | null;
  readonly #be: Backend;
  readonly #seed: number;
  #rope: DeviceRope;
  readonly #al: Allocator;
  readonly #layers: DecoderLayer[];
  readonly #output: Linear;
  readonly #norm: RmsNorm;
  readonly #tokEmb: DeviceBuffer; // (V, C)
  readonly #dTokEmb: DeviceBuffer | null; // (V, C)
  readonly #dims: ActDims;
  readonly #acts: LayerActs[]; // L of them, or 1 shared with checkpointing
  readonly #resid: DeviceBuffer[]; // L+1 of (N, C): layer inputs, then the final output
  readonly #lnf: DeviceBuffer; // (N, C)
  readonly #rstdf: DeviceBuffer; // (N)
  readonly #logits: DeviceBuffer; // (Nc, V) Nc = rows per chunk; dlogits overwrite it
  readonly #chunkRows: number; // Nc
  readonly #losses: DeviceBuffer; // (N)
  readonly #tokens: DeviceBuffer; // (N) i32
  readonly #targets: DeviceBuffer; // (N) i32
  /** Host copies of the last uploaded tokens and targets (N): the backend checks ids there. */
  #hostTokens = new Int32Array(0);
  #hostTargets = new Int32Array(0);
  #segIds: DeviceBuffer | null = null; // (N) i32, allocated on the first packed batch
  #posIds: DeviceBuffer | null = null; // (N) i32, allocated on the first packed batch
  readonly #headHs: DeviceBuffer | null; // (N, r) LoRA hidden of the output projection
  readonly #sc: BackwardScratch | null; // null for an inference-only model
  readonly #dresid: DeviceBuffer | null; // (N, C), null for an inference-only model
  readonly #loraScratch: LoraScratch | null;
  readonly #act: "f32" | "bf16";
  /** Embedding multiplier: sqrt(dim) in the activation dtype for Gemma, else 1. */
  readonly #embedScale: number;
  /** Hooks of a model built with `groupWindows` (set by the sharded optimizer). */
  groupHooks: GroupHooks | null = null;
  readonly #windowed: boolean;
  #microStep = 0;
  #targetsValid = false;
  /** Every LoRA adapter of the model (switched off together by `withAdaptersDisabled`). */
  readonly #loras: Lora[] = [];
  /** Every DoRA layer with its frozen base weight (use_dora). */
  readonly #doras: { dora: Dora; w: DeviceBuffer }[] = [];
  #adaptersOff = false;
  #inf: InferenceState | null = null;

  constructor(backend: Backend, readonly spec: ModelSpec, opts: LlamaOptions) {
    const cfg = spec.config;
    this.cfg = cfg;
    this.#be = backend;
    this.B = opts.batch;
    this.T = opts.seqLen;
    this.checkpointing = opts.activationCheckpointing ?? false;
    this.training = opts.training ?? true;
    const training = this.training;
    this.#seed = opts.seed ?? 0;
    if (!Number.isInteger(this.B) || this.B <= 0 || !Number.isInteger(this.T) || this.T <= 0) {
      throw new TuneError(`batch size and sequence length must be positive integers`);
    }
    if (this.T > cfg.maxSeqLen) {
      throw new TuneError(
        `sequence length ${this.T} exceeds the model's max_seq_len ${cfg.maxSeqLen}; lower max_seq_len of the dataset`,
      );
    }
    const lora = spec.lora;
    const frozenDtype = lora ? (opts.frozenDtype ?? "f32") : "f32";
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
    this.base = new ParamStore(
      backend,
      baseLayout(cfg),
      lora === null && training,
      frozenDtype,
      moments,
      lora === null || opts.shardFrozenBase ? windows : null,
    );
    const act = opts.activationDtype ?? "f32";
    this.#act = act;
    this.#embedScale = embedScaleValue(cfg, act);
    this.adapters = lora
      ? new ParamStore(backend, loraLayout(cfg, lora), training, "f32", moments, windows)
      : null;
    const HS = headSize(cfg);
    const N = this.B * this.T;
    this.#dims = {
      B: this.B,
      T: this.T,
      C: cfg.dim,
      NH: cfg.nHeads,
      NKV: cfg.nKvHeads,
      HS,
      H: cfg.hiddenDim,
    };
    this.#rope = uploadRope(
      backend,
      ropeTables(HS, this.T, cfg.ropeTheta, cfg.ropeScaling),
    );

    // ---- LoRA scratch, sized for the largest adapter ----
    const al = new Allocator(backend);
    this.#al = al;
    const sites = lora ? loraSites(cfg, lora) : [];
    const r = lora?.rank ?? 0;
    this.#loraScratch = null;
    if (lora) {
      const maxIn = Math.max(...sites.map((s) => s.inDim));
      // dropout masks and dh exist only in training (eval/generation run without dropout)
      const drop = lora.dropout > 0 && training;
      this.#loraScratch = {
        xd: al.alloc("scratch", drop ? N * maxIn : 1, act),
        dxd: al.alloc("scratch", drop ? N * maxIn : 1, act),
        dh: al.alloc("scratch", training ? N * r : 1, act),
      };
    }
    const adapted = new Set(sites.map((s) => s.prefix));
    let doraScratch: DoraScratch | null = null;
    if (lora?.useDora) {
      if (this.#windowed) {
        throw new TuneError(
          "use_dora=True is not supported by the sharded (distributed) LoRA recipes yet; run lora_finetune_single_device",
        );
      }
      if (cfg.qkvBias && sites.some((s) => /\.(q|k|v)_proj$/.test(s.prefix))) {
        throw new TuneError(
          "use_dora=True does not support linear layers with a bias (torchtune's DoRALinear); drop q_proj, k_proj, v_proj from lora_attn_modules or set use_dora=False",
        );
      }
      // the output projection runs over row chunks of the logits (see logitChunks)
      const chunks = Math.max(1, Math.min(Math.floor(opts.logitChunks ?? 1), N));
      const rows = (p: string) => (p === "output" ? Math.ceil(N / chunks) : N);
      const maxZ = Math.max(...sites.map((s) => rows(s.prefix) * s.outDim));
      const maxIO = Math.max(...sites.map((s) => s.outDim * s.inDim));
      doraScratch = {
        ba: al.alloc("scratch", maxIO), // (maxOut, maxIn) fp32
        z: al.alloc("scratch", training ? maxZ : 1, act), // (N, maxOut)
      };
    }

    // ---- modules over views of the flat stores ----
    const linear = (prefix: string, inDim: number, outDim: number, weightName?: string) => {
      const wName = weightName ?? `${prefix}.weight`;
      const hasBias = this.base.layout.has(`${prefix}.bias`);
      const l = adapted.has(prefix) && lora && this.adapters
        ? new Lora(inDim, outDim, lora.rank, lora.alpha, lora.dropout, {
          a: this.adapters.param(`${prefix}.lora_a.weight`),
          b: this.adapters.param(`${prefix}.lora_b.weight`),
          da: this.adapters.grad(`${prefix}.lora_a.weight`),
          db: this.adapters.grad(`${prefix}.lora_b.weight`),
        }, this.#loraScratch!)
        : null;
      if (l) this.#loras.push(l);
      if (l && doraScratch && this.adapters) {
        l.dora = new Dora(l, {
          magnitude: this.adapters.param(`${prefix}.magnitude`),
          dmagnitude: this.adapters.grad(`${prefix}.magnitude`),
          norm: al.alloc("scratch", outDim),
          scale: al.alloc("scratch", outDim),
        }, doraScratch);
        this.#doras.push({ dora: l.dora, w: this.base.param(wName) });
      }
      return new Linear(inDim, outDim, {
        w: this.base.param(wName),
        b: hasBias ? this.base.param(`${prefix}.bias`) : null,
        dw: this.base.grad(wName),
        db: hasBias ? this.base.grad(`${prefix}.bias`) : null,
      }, l);
    };
    // Gemma's norms multiply by 1 + scale: one (C) fp32 scratch shared by every norm
    const effScale = cfg.normOffset ? al.alloc("scratch", cfg.dim) : null;
    const norm = (name: string) =>
      new RmsNorm(
        cfg.dim,
        cfg.normEps,
        this.base.param(name),
        this.base.grad(name),
        cfg.normOffset ?? 0,
        effScale,
      );
    this.#layers = [];
    for (let i = 0; i < cfg.nLayers; i++) {
      const [q, k, v, o, w1, w2, w3] = layerLinears(cfg, i).map((s) =>
        linear(s.prefix, s.inDim, s.outDim)
      );
      const attn = new Attention(
        { NH: cfg.nHeads, NKV: cfg.nKvHeads, HS },
        q,
        k,
        v,
        o,
        this.#rope,
        cfg.ropeLayout,
      );
      this.#layers.push(
        new DecoderLayer(
          norm(`layers.${i}.sa_norm.scale`),
          attn,
          norm(`layers.${i}.mlp_norm.scale`),
          new FeedForward(cfg.hiddenDim, w1, w2, w3, hiddenAct(cfg)),
        ),
      );
    }
    this.#norm = norm("norm.scale");
    this.#tokEmb = this.base.param("tok_embeddings.weight");
    this.#dTokEmb = this.base.grad("tok_embeddings.weight");
    this.#output = linear(
      "output",
      cfg.dim,
      cfg.vocabSize,
      cfg.tiedEmbeddings ? "tok_embeddings.weight" : "output.weight",
    );

    // ---- activations ----
    const ranks: Partial<Record<LayerLinear, number>> = {};
    for (const s of layerLinears(cfg, 0)) {
      if (adapted.has(s.prefix)) ranks[s.key as LayerLinear] = r;
    }
    // inference needs no layer's activations after its forward: one shared set
    const nActs = this.checkpointing || !training ? 1 : cfg.nLayers;
    this.#acts = [];
    for (let i = 0; i < nActs; i++) {
      this.#acts.push(
        allocLayerActs(al, this.checkpointing ? "scratch" : "activations", this.#dims, ranks, act),
      );
    }
    this.#resid = [];
    if (training) {
      for (let i = 0; i <= cfg.nLayers; i++) {
        this.#resid.push(al.alloc("activations", N * cfg.dim, act));
      }
    } else {
      // inference: the residual stream ping-pongs between two (N, C) buffers
      const pair = [
        al.alloc("activations", N * cfg.dim, act),
        al.alloc("activations", N * cfg.dim, act),
      ];
      for (let i = 0; i <= cfg.nLayers; i++) this.#resid.push(pair[i % 2]);
    }
    this.#lnf = al.alloc("activations", N * cfg.dim, act);
    this.#rstdf = al.alloc("activations", N);
    const chunks = opts.logitChunks ?? 1;
    if (!Number.isInteger(chunks) || chunks < 1) {
      throw new TuneError(`num_output_chunks must be a positive integer, got ${chunks}`);
    }
    this.#chunkRows = Math.ceil(N / Math.min(chunks, N));
    this.#logits = al.alloc("activations", this.#chunkRows * cfg.vocabSize, act);
    this.#losses = al.alloc("activations", N);
    this.#tokens = al.alloc("activations", N, "i32");
    this.#targets = al.alloc("activations", N, "i32");
    this.#headHs = adapted.has("output") ? al.alloc("activations", N * r, act) : null;
    this.#sc = training ? allocBackwardScratch(al, "scratch", this.#dims, act) : null;
    this.#dresid = training ? al.alloc("scratch", N * cfg.dim) : null;
  }

  /**
   * Micro-batches run by `lossAndBackward` so far; it keys LoRA dropout masks. Save it with
   * a checkpoint and set it on resume so the masks (and losses) continue bitwise.
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
    const strict = opts.strict ?? true;
    for (const e of this.base.layout.entries) {
      const t = sd.get(e.name);
      if (!t) {
        throw new TuneError(
          `checkpoint has no tensor ${e.name} (expected shape [${
            e.shape.join(", ")
          }]) for model ${this.spec.name}; check the model builder and checkpoint files`,
        );
      }
      this.base.setTensor(e.name, t);
    }
    if (this.adapters) {
      const all = this.adapters.layout.entries.map((e) => e.name);
      const mags = all.filter((n) => n.endsWith(".magnitude"));
      const magsPresent = mags.filter((n) => sd.has(n));
      // an adapter without magnitudes (e.g. plain LoRA) gets them from the loaded weights
      const names = magsPresent.length === 0 ? all.filter((n) => !n.endsWith(".magnitude")) : all;
      const present = names.filter((n) => sd.has(n));
      if (present.length === 0) this.initAdapters(this.#seed);
      else {
        for (const n of names) {
          const t = sd.get(n);
          if (!t) {
            throw new TuneError(
              `adapter checkpoint has ${
                present[0]
              } but no ${n}; check lora_attn_modules, apply_lora_to_mlp and apply_lora_to_output against the adapter file`,
            );
          }
          this.adapters.setTensor(n, t);
        }
        if (magsPresent.length === 0) this.#initDoraMagnitudes();
      }
    }
    if (strict) {
      for (const name of sd.keys()) {
        if (!this.base.layout.has(name) && !this.adapters?.layout.has(name)) {
          throw new TuneError(
            `checkpoint tensor ${name} is not a parameter of model ${this.spec.name}; check that the model builder matches the checkpoint`,
          );
        }
      }
    }
  }

  /** Deterministic random base weights (and fresh adapters) for `seed`. */
  initRandom(seed: number): void {
    const sd = randomBaseWeights(this.cfg, this.base.layout, seed);
    for (const [n, t] of sd) this.base.setTensor(n, t);
    if (this.adapters) this.initAdapters(mixSeed(seed, 0x10a));
  }

  /**
   * Fresh adapters: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform, a=sqrt(5)), B = 0; DoRA
   * magnitudes = ||W|| per row of the current base weights.
   */
  initAdapters(seed: number): void {
    if (!this.adapters || !this.spec.lora) return;
    const rng = new SeededRandom(seed);
    for (const s of loraSites(this.cfg, this.spec.lora)) {
      const { a, b } = initLoraHost(this.spec.lora.rank, s.inDim, s.outDim, rng);
      this.adapters.setTensor(`${s.prefix}.lora_a.weight`, {
        shape: [this.spec.lora.rank, s.inDim],
        data: a,
      });
      this.adapters.setTensor(`${s.prefix}.lora_b.weight`, {
        shape: [s.outDim, this.spec.lora.rank],
        data: b,
      });
    }
    this.#initDoraMagnitudes();
  }

  /** magnitude = ||W + s B A|| per row of every DoRA layer, from the current weights. */
  #initDoraMagnitudes(): void {
    for (const { dora, w } of this.#doras) dora.initMagnitude(this.#be, w);
  }

  /** Base weights and adapters as one StateDict (tune names). */
  stateDict(): StateDict {
    const sd = this.base.toStateDict();
    if (this.adapters) { for (const [n, t] of this.adapters.toStateDict()) sd.set(n, t); }
    return sd;
  }

  /** Only the adapters (empty without LoRA). */
  adapterStateDict(): StateDict {
    return this.adapters ? this.adapters.toStateDict() : new Map();
  }

  /**
   * Base weights with every adapter merged in: W += (alpha / r) B A; with DoRA
   * W' = (magnitude / ||W + s B A||)[:, None] * (W + s B A).
   */
  mergedStateDict(): StateDict {
    const sd = this.base.toStateDict();
    const lora = this.spec.lora;
    if (!this.adapters || !lora) return sd;
    const ad = this.adapters.toStateDict();
    for (const s of loraSites(this.cfg, lora)) {
      const wName = s.prefix === "output" && this.cfg.tiedEmbeddings
        ? "tok_embeddings.weight"
        : `${s.prefix}.weight`;
      const w = sd.get(wName)!;
      const aw = ad.get(`${s.prefix}.lora_a.weight`)!.data;
      const bw = ad.get(`${s.prefix}.lora_b.weight`)!.data;
      const merged = lora.useDora
        ? mergeDoraHost(
          w.data,
          aw,
          bw,
          ad.get(`${s.prefix}.magnitude`)!.data,
          s.outDim,
          s.inDim,
          lora.rank,
          lora.alpha,
        )
        : mergeLoraHost(w.data, aw, bw, s.outDim, s.inDim, lora.rank, lora.alpha);
      sd.set(wName, { shape: w.shape, data: merged });
    }
    return sd;
  }

  /** Zero the trainable gradients. */
  zeroGrad(): void {
    this.trainable.zeroGrad();
  }

  /**
   * Forward of a (B, T) batch of token ids (eval mode: no dropout). Returns the logits
   * buffer (B, T, V), valid until the next call.
   */
  forward(tokens: Int32Array, batch: BatchOptions = {}): DeviceBuffer {
    this.#needFullWeights();
    const N = this.B * this.T;
    if (this.#chunkRows < N) {
      throw new Error("forward() returns all logits: build the model with logitChunks 1");
    }
    this.#uploadTokens(tokens, null);
    this.#setPacking(batch);
    this.#forward(null);
    this.#head(0, N, null, null);
    return this.#logits;
  }

  /** Summed cross-entropy of targets (B, T) given tokens (B, T), no gradients (eval mode). */
  loss(tokens: Int32Array, targets: Int32Array, batch: BatchOptions = {}): LossResult {
    const count = this.#evalLosses(tokens, targets, batch);
    return { lossSum: this.#be.sum(this.#losses), tokens: count };
  }

  /**
   * Summed cross-entropy of each sequence (B): -log p of its targets given its tokens, no
   * gradients (eval mode). DPO's reference log-probabilities are minus these.
   */
  sequenceLosses(tokens: Int32Array, targets: Int32Array, batch: BatchOptions = {}): Float64Array {
    this.#evalLosses(tokens, targets, batch);
    return this.#sequenceSums();
  }

  /**
   * Run `fn` with every LoRA adapter switched off: the frozen base alone (DPO's reference
   * model, torchtune's disable_adapter). Training calls inside `fn` throw. When `fn`
   * returns a promise, the adapters come back on once it settles.
   */
  withAdaptersDisabled<T>(fn: () => T): T {
    if (this.#loras.length === 0) {
      throw new Error("withAdaptersDisabled() needs a model with LoRA adapters");
    }
    const was = this.#adaptersOff;
    const restore = () => {
      this.#adaptersOff = was;
      for (const l of this.#loras) l.enabled = !was;
    };
    this.#adaptersOff = true;
    for (const l of this.#loras) l.enabled = false;
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

  /**
   * Forward and backward of one micro-batch in training mode (LoRA dropout on). Gradients
   * of sum-of-token-losses * gradScale ACCUMULATE into the trainable store's grads (call
   * zeroGrad between optimizer steps). Pass gradScale = 1 / (tokens counted over the whole
   * step) for torchtune's mean loss. Returns the unscaled summed loss and the token count.
   */
  lossAndBackward(
    tokens: Int32Array,
    targets: Int32Array,
    gradScale: number,
    batch: BatchOptions = {},
  ): LossResult {
    const count = this.#trainStep(tokens, targets, batch, gradScale, {});
    return { lossSum: this.#be.sum(this.#losses), tokens: count };
  }

  /**
   * `lossAndBackward` for knowledge distillation: the gradients of
   * ((1 - r) class loss + r KD loss) * gradScale, summed over tokens, ACCUMULATE, where the KD
   * loss of a token is the cross-entropy of the student against softmax(teacher logits)
   * (torchtune's ForwardKLLoss before its mean). Returns both sums and the token count.
   */
  distillLossAndBackward(
    tokens: Int32Array,
    targets: Int32Array,
    gradScale: number,
    distill: DistillTargets,
    batch: BatchOptions = {},
  ): DistillLossResult {
    this.#checkTeacherLogits(distill);
    const count = this.#trainStep(tokens, targets, batch, gradScale, { distill });
    return this.#distillResult(count);
  }

  /** `distillLossAndBackward` of a model built with `groupWindows` (see `lossAndBackwardAsync`). */
  async distillLossAndBackwardAsync(
    tokens: Int32Array,
    targets: Int32Array,
    gradScale: number,
    distill: DistillTargets,
    batch: BatchOptions = {},
  ): Promise<DistillLossResult> {
    this.#checkTeacherLogits(distill);
    const count = await this.#trainStepAsync(tokens, targets, batch, gradScale, { distill });
    return this.#distillResult(count);
  }

  #checkTeacherLogits(distill: DistillTargets): void {
    const N = this.B * this.T, V = this.cfg.vocabSize;
    if (distill.teacherLogits.length < N * V) {
      throw new TuneError(
        `teacher logits hold ${distill.teacherLogits.length} values, not (${N}, ${V}); ` +
          `the teacher and student must share batch, sequence length and vocabulary`,
      );
    }
  }

  #distillResult(count: number): DistillLossResult {
    return {
      lossSum: this.#be.sum(this.#losses),
      kdLossSum: this.#be.sum(this.#kdLossBuffer()),
      tokens: count,
    };
  }

  /** (N) per-row KD losses, allocated on the first distillation step. */
  #kdLosses: DeviceBuffer | null = null;
  #kdLossBuffer(): DeviceBuffer {
    this.#kdLosses ??= this.#al.alloc("activations", this.B * this.T);
    return this.#kdLosses;
  }

  /**
   * Forward and backward of one micro-batch whose sequences carry their own loss weights,
   * chosen after the forward from the sequences' summed token losses (preference losses:
   * DPO): the gradients of sum_b w[b] * seqLoss[b], w = weigh(seqLoss), ACCUMULATE into
   * the trainable store's grads. One forward serves the loss and the backward, so the model
   * needs all logits at once (logitChunks 1). LoRA dropout is on, as in `lossAndBackward`.
   */
  weightedLossAndBackward(
    tokens: Int32Array,
    targets: Int32Array,
    weigh: SequenceWeigher,
    batch: BatchOptions = {},
  ): WeightedLossResult {
    this.#needAllLogits();
    this.#trainStep(tokens, targets, batch, 1, { weigh });
    return this.#weighed!;
  }

  /** The weighting of the last `weightedLossAndBackward` (set inside its head). */
  #weighed: WeightedLossResult | null = null;

  /** `lossAndBackward` / `weightedLossAndBackward`: forward, head and backward; returns the target count. */
  #trainStep(
    tokens: Int32Array,
    targets: Int32Array,
    batch: BatchOptions,
    gradScale: number,
    headLoss: HeadLoss,
  ): number {
    if (!this.#sc || !this.#dresid) {
      throw new Error(
        "lossAndBackward() needs a training model: this one was built with training: false (inference only)",
      );
    }
    if (this.#adaptersOff) throw new Error("cannot train inside withAdaptersDisabled()");
    this.#needFullWeights();
    const be = this.#be;
    const count = this.#uploadTokens(tokens, targets);
    this.#setPacking(batch);
    this.#microStep++;
    const seed = this.spec.lora && this.spec.lora.dropout > 0
      ? mixSeed(this.#seed, this.#microStep)
      : null;
    this.#forward(seed);
    const { N, C, L } = this.#nv();
    const sc = this.#sc;
    // ---- output projection, loss and their backward, chunk by chunk ----
    be.fill(sc.dln, 0);
    for (let r0 = 0; r0 < N; r0 += this.#chunkRows) {
      this.#head(r0, Math.min(this.#chunkRows, N - r0), seed, gradScale, headLoss);
    }
    const dx = this.#dresid; // (N, C) gradient of the residual stream
    be.fill(dx, 0);
    this.#norm.backward(be, dx, sc.dln, this.#resid[L], this.#rstdf, N);
    // ---- layers, last to first ----
    for (let l = L - 1; l >= 0; l--) {
      const acts = this.#acts[this.#acts.length === 1 ? 0 : l];
      const ls = seed === null ? null : mixSeed(seed, l);
      if (this.checkpointing) {
        // recompute the layer from its saved input into the shared buffers
        // (its output lands in resid[l+1] again, which backward no longer needs)
        this.#layers[l].forward(be, this.#resid[l + 1], this.#resid[l], acts, this.B, this.T, ls);
      }
      this.#layers[l].backward(be, dx, this.#resid[l], acts, sc, this.B, this.T, ls);
    }
    if (this.#dTokEmb) {
      this.#scaleEmbeddings(dx); // d(e * s)/de = s
      be.embeddingBackward(this.#dTokEmb, dx, this.#tokens, N, C, this.#hostTokens);
    }
    return count;
  }

  /**
   * `lossAndBackward` of a model built with `groupWindows` (FSDP/ZeRO-3), calling
   * `groupHooks` around every group: the same op calls in the same order, so the loss and
   * gradients are those of `lossAndBackward` on the gathered weights. Gradients do not
   * accumulate here: each group's land in its slot and go to the hooks right after its
   * backward (the sharded optimizer accumulates its slice).
   */
  async lossAndBackwardAsync(
    tokens: Int32Array,
    targets: Int32Array,
    gradScale: number,
    batch: BatchOptions = {},
  ): Promise<LossResult> {
    const count = await this.#trainStepAsync(tokens, targets, batch, gradScale, {});
    return { lossSum: this.#be.sum(this.#losses), tokens: count };
  }

  /** `weightedLossAndBackward` of a model built with `groupWindows` (see `lossAndBackwardAsync`). */
  async weightedLossAndBackwardAsync(
    tokens: Int32Array,
    targets: Int32Array,
    weigh: SequenceWeigher,
    batch: BatchOptions = {},
  ): Promise<WeightedLossResult> {
    this.#needAllLogits();
    await this.#trainStepAsync(tokens, targets, batch, 1, { weigh });
    return this.#weighed!;
  }

  /** `sequenceLosses` of a model built with `groupWindows`: each group gathered before it runs. */
  async sequenceLossesAsync(
    tokens: Int32Array,
    targets: Int32Array,
    batch: BatchOptions = {},
  ): Promise<Float64Array> {
    this.#needHooks();
    this.#uploadTokens(tokens, targets);
    this.#setPacking(batch);
    await this.#forwardWindowed(null);
    const N = this.B * this.T;
    for (let r0 = 0; r0 < N; r0 += this.#chunkRows) {
      this.#head(r0, Math.min(this.#chunkRows, N - r0), null, null);
    }
    return this.#sequenceSums();
  }

  #needHooks(): GroupHooks {
    if (!this.#windowed || !this.groupHooks) {
      throw new Error(
        "lossAndBackwardAsync() needs a model built with groupWindows and groupHooks set",
      );
    }
    return this.groupHooks;
  }

  /** A preference loss weighs sequences by every sequence's loss: no logit chunks. */
  #needAllLogits(): void {
    if (this.#chunkRows < this.B * this.T) {
      throw new TuneError(
        "a preference loss needs all logits of a batch at once; build the model with logitChunks 1",
      );
    }
  }

  /** The forward of a windowed model, group by group (the same calls as #forward), up to the final norm. */
  async #forwardWindowed(seed: number | null): Promise<void> {
    const h = this.#needHooks();
    const be = this.#be;
    const { N, C, L } = this.#nv();
    await h.beforeGroup("tok_embeddings", "forward");
    be.embeddingForward(this.#resid[0], this.#tokens, this.#tokEmb, N, C, this.#hostTokens); // (N, C)
    this.#scaleEmbeddings(this.#resid[0]);
    for (let l = 0; l < L; l++) {
      await h.beforeGroup(`layers.${l}`, "forward");
      const acts = this.#acts[this.#acts.length === 1 ? 0 : l];
      const ls = seed === null ? null : mixSeed(seed, l);
      this.#layers[l].forward(be, this.#resid[l + 1], this.#resid[l], acts, this.B, this.T, ls);
    }
    // the head runs its forward and backward back to back: its gathered values stay (as
    // does a tied embedding, in its own slot since the embedding forward)
    await h.beforeGroup("head", "forward");
    this.#norm.forward(be, this.#lnf, this.#rstdf, this.#resid[L], N); // (N, C)
  }

  /** `lossAndBackwardAsync` / `weightedLossAndBackwardAsync`; returns the target count. */
  async #trainStepAsync(
    tokens: Int32Array,
    targets: Int32Array,
    batch: BatchOptions,
    gradScale: number,
    headLoss: HeadLoss,
  ): Promise<number> {
    const h = this.#needHooks();
    if (this.#adaptersOff) throw new Error("cannot train inside withAdaptersDisabled()");
    const be = this.#be;
    const t = this.trainable;
    const has = (g: string) => t.hasGroup(g);
    const gather = (g: string, phase: "forward" | "backward") => h.beforeGroup(g, phase);
    const zero = (g: string) => has(g) && be.fill(t.groupGrads(g), 0);
    const done = async (g: string) => {
      if (has(g)) await h.afterGroupBackward(g);
    };
    const tied = this.cfg.tiedEmbeddings;
    const count = this.#uploadTokens(tokens, targets);
    this.#setPacking(batch);
    this.#microStep++;
    const seed = this.spec.lora && this.spec.lora.dropout > 0
      ? mixSeed(this.#seed, this.#microStep)
      : null;
    const { N, C, L } = this.#nv();
    await this.#forwardWindowed(seed);
    const sc = this.#sc!;
    zero("head");
    if (tied) zero("tok_embeddings");
    be.fill(sc.dln, 0);
    for (let r0 = 0; r0 < N; r0 += this.#chunkRows) {
      this.#head(r0, Math.min(this.#chunkRows, N - r0), seed, gradScale, headLoss);
    }
    const dx = this.#dresid!; // (N, C) gradient of the residual stream
    be.fill(dx, 0);
    this.#norm.backward(be, dx, sc.dln, this.#resid[L], this.#rstdf, N);
    await done("head");
    // ---- layers, last to first: gather, (recompute,) backward, reduce ----
    for (let l = L - 1; l >= 0; l--) {
      const g = `layers.${l}`;
      await gather(g, "backward");
      zero(g);
      const acts = this.#acts[this.checkpointing ? 0 : l];
      const ls = seed === null ? null : mixSeed(seed, l);
      if (this.checkpointing) {
        this.#layers[l].forward(be, this.#resid[l + 1], this.#resid[l], acts, this.B, this.T, ls);
      }
      this.#layers[l].backward(be, dx, this.#resid[l], acts, sc, this.B, this.T, ls);
      await done(g);
    }
    // the embedding backward needs no values; a tied embedding's gradient already holds the head's part
    if (this.#dTokEmb) {
      if (!tied) zero("tok_embeddings");
      this.#scaleEmbeddings(dx); // d(e * s)/de = s
      be.embeddingBackward(this.#dTokEmb, dx, this.#tokens, N, C, this.#hostTokens);
      await done("tok_embeddings");
    }
    return count;
  }

  /** Bytes held by this model, by kind. */
  memory(): MemoryReport {
    const by = this.#al.bytesBy;
    const t = this.trainable;
    const p = this.base.paramBytes() + (this.adapters ? this.adapters.paramBytes() : 0);
    return {
      parameters: p,
      gradients: t.gradBytes(),
      optimizer: t.m ? t.layout.total * 8 : 0,
      activations: by.get("activations") ?? 0,
      scratch: by.get("scratch") ?? 0,
      inference: this.#inf ? (this.#inf.alloc.bytesBy.get("inference") ?? 0) : 0,
    };
  }

  // ---- generation with a KV cache ----------------------------------------------------

  /** Allocate KV caches for `batch` sequences of up to `capacity` positions (replaces old ones). */
  setupCaches(batch: number, capacity: number): void {
    if (capacity > this.cfg.maxSeqLen) {
      throw new TuneError(
        `generation length ${capacity} exceeds the model's max_seq_len ${this.cfg.maxSeqLen}; lower max_new_tokens or the prompt length`,
      );
    }
    this.#inf?.alloc.freeAll();
    const be = this.#be;
    const cfg = this.cfg;
    if (capacity > this.#rope.maxSeqLen) this.#growRope(capacity);
    const al = new Allocator(be);
    const KV = cfg.nKvHeads * headSize(cfg);
    const caches: KvCache[] = [];
    for (let i = 0; i < cfg.nLayers; i++) {
      caches.push({
        k: al.alloc("inference", batch * capacity * KV, this.#act),
        v: al.alloc("inference", batch * capacity * KV, this.#act),
        capacity,
      });
    }
    const r = this.spec.lora?.rank ?? 0;
    const ranks: Partial<Record<LayerLinear, number>> = {};
    const adapted = new Set(
      this.spec.lora ? loraSites(cfg, this.spec.lora).map((s) => s.prefix) : [],
    );
    for (const s of layerLinears(cfg, 0)) {
      if (adapted.has(s.prefix)) ranks[s.key as LayerLinear] = r;
    }
    this.#inf = {
      B: batch,
      capacity,
      pos: 0,
      caches,
      acts: allocLayerActs(
        al,
        "inference",
        { ...this.#dims, B: batch, T: capacity },
        ranks,
        this.#act,
      ),
      resid: [
        al.alloc("inference", batch * capacity * cfg.dim, this.#act),
        al.alloc("inference", batch * capacity * cfg.dim, this.#act),
      ],
      tokens: al.alloc("inference", batch * capacity, "i32"),
      last: al.alloc("inference", batch * cfg.dim, this.#act),
      lnLast: al.alloc("inference", batch * cfg.dim, this.#act),
      rstdLast: al.alloc("inference", batch),
      logits: al.alloc("inference", batch * cfg.vocabSize),
      headHs: adapted.has("output") ? al.alloc("inference", batch * r, this.#act) : null,
      alloc: al,
      decoder: null,
    };
    const inf = this.#inf;
    inf.decoder = fusedDecoder(be, {
      cfg,
      base: this.base,
      special: this.spec.lora !== null || this.#act !== "f32" || this.#windowed,
      caches,
      rope: this.#rope,
      logits: inf.logits,
      B: batch,
      capacity,
    });
  }

  /** Current position of the KV cache (tokens processed since the last prefill). */
  get cachePosition(): number {
    return this.#inf?.pos ?? 0;
  }

  /**
   * Start generation: run `tokens` (B, T) from position 0, filling the caches. Returns the
   * logits (B, V) of the last position, valid until the next call.
   */
  prefill(tokens: Int32Array): DeviceBuffer {
    this.#needFullWeights();
    const inf = this.#needCaches();
    inf.pos = 0;
    if (inf.decoder !== null && tokens.length === inf.B) return this.#fusedStep(inf, tokens);
    return this.#inferStep(tokens);
  }

  /** Run one new token per sequence (B) at the cache position; logits (B, V) of it. */
  decodeStep(tokens: Int32Array): DeviceBuffer {
    const inf = this.#needCaches();
    if (tokens.length !== inf.B) {
      throw new Error(`decodeStep takes ${inf.B} tokens, got ${tokens.length}`);
    }
    if (inf.decoder !== null) return this.#fusedStep(inf, tokens);
    return this.#inferStep(tokens);
  }

  /** One token per sequence through the backend's fused decoder (logits as #inferStep). */
  #fusedStep(inf: InferenceState, tokens: Int32Array): DeviceBuffer {
    if (inf.pos + 1 > inf.capacity) {
      throw new TuneError(
        `generation reached position ${
          inf.pos + 1
        }, beyond the cache capacity ${inf.capacity}; lower max_new_tokens`,
      );
    }
    inf.decoder!.step(tokens, inf.pos);
    inf.pos += 1;
    return inf.logits;
  }

  /** Release every buffer of the model. */
  free(): void {
    this.#inf?.alloc.freeAll();
    this.#al.freeAll();
    this.base.free();
    this.adapters?.free();
    this.#be.free(this.#rope.cos);
    this.#be.free(this.#rope.sin);
    if (this.#segIds) this.#be.free(this.#segIds);
    if (this.#posIds) this.#be.free(this.#posIds);
  }

  // ---- internals ----------------------------------------------------------------------

  #needFullWeights(): void {
    if (this.#windowed) {
      throw new Error(
        "this model keeps its weights sharded (groupWindows): train with lossAndBackwardAsync",
      );
    }
  }

  #nv() {
    return { N: this.B * this.T, V: this.cfg.vocabSize, C: this.cfg.dim, L: this.cfg.nLayers };
  }

  #uploadTokens(tokens: Int32Array, targets: Int32Array | null): number {
    const N = this.B * this.T;
    if (tokens.length !== N) {
      throw new Error(
        `model built for batch ${this.B} x seq_len ${this.T} got ${tokens.length} tokens`,
      );
    }
    const V = this.cfg.vocabSize;
    for (const t of tokens) {
      if (!(t >= 0 && t < V)) {
        throw new TuneError(
          `token id ${t} is outside the vocabulary (size ${V}); check the tokenizer matches the model`,
        );
      }
    }
    this.#be.upload(this.#tokens, tokens);
    this.#hostTokens = tokens.slice();
    this.#targetsValid = targets !== null;
    if (!targets) return 0;
    if (targets.length !== N) throw new Error(`expected ${N} targets, got ${targets.length}`);
    let count = 0;
    for (const t of targets) {
      if (t === -100) continue;
      if (!(t >= 0 && t < V)) {
        throw new TuneError(
          `label ${t} is outside the vocabulary (size ${V}); check the tokenizer matches the model`,
        );
      }
      count++;
    }
    this.#be.upload(this.#targets, targets);
    this.#hostTargets = targets.slice();
    return count;
  }

  /** Upload a batch's packing (or clear it) and hand it to every layer's attention. */
  #setPacking(batch: BatchOptions): void {
    const N = this.B * this.T;
    const { segments = null, positions = null } = batch;
    for (const [what, a] of [["segments", segments], ["positions", positions]] as const) {
      if (a !== null && a.length !== N) {
        throw new Error(`model built for ${N} tokens per batch got ${a.length} ${what}`);
      }
    }
    if (positions !== null) {
      const max = this.#rope.maxSeqLen;
      for (const p of positions) {
        if (!(p >= 0 && p < max)) {
          throw new TuneError(
            `packed position ${p} is outside 0..${max - 1}; check the dataset's input_pos`,
          );
        }
      }
    }
    if (segments !== null) {
      this.#segIds ??= this.#be.alloc(N, "i32");
      this.#be.upload(this.#segIds, segments);
    }
    if (positions !== null) {
      this.#posIds ??= this.#be.alloc(N, "i32");
      this.#be.upload(this.#posIds, positions);
    }
    const packing = segments === null && positions === null ? null : {
      segments: segments === null ? null : this.#segIds,
      positions: positions === null ? null : this.#posIds,
    };
    for (const layer of this.#layers) layer.attn.packing = packing;
  }

  #forward(seed: number | null): void {
    const be = this.#be;
    const { N, C, L } = this.#nv();
    be.embeddingForward(this.#resid[0], this.#tokens, this.#tokEmb, N, C, this.#hostTokens); // (N, C)
    this.#scaleEmbeddings(this.#resid[0]);
    for (let l = 0; l < L; l++) {
      const acts = this.#acts[this.#acts.length === 1 ? 0 : l];
      const ls = seed === null ? null : mixSeed(seed, l);
      this.#layers[l].forward(be, this.#resid[l + 1], this.#resid[l], acts, this.B, this.T, ls);
    }
    this.#norm.forward(be, this.#lnf, this.#rstdf, this.#resid[L], N); // (N, C)
  }

  /**
   * Output projection of rows [r0, r0 + n) into the logits buffer; with `targets` also the
   * losses of those rows, and with `gradScale` the backward: dlogits overwrite the logits,
   * the rows of dln (zeroed by the caller) and the head's parameter gradients accumulate.
   */
  #head(
    r0: number,
    n: number,
    seed: number | null,
    gradScale: number | null,
    headLoss: HeadLoss = {},
  ): void {
    const be = this.#be;
    const { N, V, C, L } = this.#nv();
    const whole = r0 === 0 && n === N;
    const lnf = whole ? this.#lnf : be.view(this.#lnf, r0 * C, n * C); // (n, C)
    const logits = n * V === this.#logits.length ? this.#logits : be.view(this.#logits, 0, n * V); // (n, V)
    const r = this.spec.lora?.rank ?? 0;
    const hs = this.#headHs && !whole ? be.view(this.#headHs, r0 * r, n * r) : this.#headHs; // (n, r)
    // one chunk keeps the unchunked seed, so masks do not depend on chunking when it is off
    const hseed = seed === null
      ? null
      : whole
      ? headSeed(seed, L)
      : mixSeed(headSeed(seed, L)!, r0);
    this.#output.forward(be, logits, lnf, n, hs, hseed);
    if (gradScale === null && this.#targetsValid === false) return;
    const losses = whole ? this.#losses : be.view(this.#losses, r0, n); // (n)
    const targets = whole ? this.#targets : be.view(this.#targets, r0, n); // (n)
    const hostTargets = this.#hostTargets.subarray(r0, r0 + n); // (n)
    if (gradScale === null) {
      be.crossEntropy(losses, null, logits, targets, n, V, 1, hostTargets);
      return;
    }
    const { weigh, distill } = headLoss;
    const logitSums = weigh ? this.#countedLogitSums(logits) : null; // before dlogits overwrite them
    if (distill) {
      const kd = this.#kdLossBuffer();
      be.distillCrossEntropy(
        losses,
        whole ? kd : be.view(kd, r0, n),
        logits,
        logits,
        be.view(distill.teacherLogits, r0 * V, n * V), // (n, V)
        targets,
        n,
        V,
        distill.kdRatio,
        gradScale,
        hostTargets,
      );
    } else be.crossEntropy(losses, logits, logits, targets, n, V, gradScale, hostTargets);
    if (weigh) this.#weighSequences(logits, weigh, logitSums!);
    const sc = this.#sc!; // gradScale is only given by lossAndBackward (training models)
    const dln = whole ? sc.dln : be.view(sc.dln, r0 * C, n * C); // (n, C)
    this.#output.backward(be, dln, logits, lnf, n, hs, hseed);
  }

  /** Forward and per-row losses of an eval batch (no gradients); returns the target count. */
  #evalLosses(tokens: Int32Array, targets: Int32Array, batch: BatchOptions): number {
    this.#needFullWeights();
    const count = this.#uploadTokens(tokens, targets);
    this.#setPacking(batch);
    this.#forward(null);
    const N = this.B * this.T;
    for (let r0 = 0; r0 < N; r0 += this.#chunkRows) {
      this.#head(r0, Math.min(this.#chunkRows, N - r0), null, null);
    }
    return count;
  }

  /** (B) sums of the per-row losses over each sequence's T rows, in float64. */
  #sequenceSums(): Float64Array {
    const rows = this.#be.download(this.#losses) as Float32Array; // (N)
    const out = new Float64Array(this.B);
    for (let b = 0; b < this.B; b++) {
      let s = 0;
      for (let t = 0; t < this.T; t++) s += rows[b * this.T + t];
      out[b] = s;
    }
    return out;
  }

  /**
   * (B) sums of all logits (B*T, V) over each sequence's counted rows (target not -100):
   * TRL's logits/chosen metric. One reduction per run of consecutive counted rows.
   */
  #countedLogitSums(logits: DeviceBuffer): Float64Array {
    const { V } = this.#nv();
    const out = new Float64Array(this.B);
    const tg = this.#hostTargets; // (N)
    for (let b = 0; b < this.B; b++) {
      let t = 0;
      while (t < this.T) {
        if (tg[b * this.T + t] === -100) {
          t++;
          continue;
        }
        const start = t;
        while (t < this.T && tg[b * this.T + t] !== -100) t++;
        out[b] += this.#be.sum(this.#be.view(logits, (b * this.T + start) * V, (t - start) * V));
      }
    }
    return out;
  }

  /**
   * After cross-entropy wrote d(token loss)/dlogits (gradScale 1) over all B*T rows: ask
   * `weigh` for each sequence's weight given its summed loss, and scale its T rows by it.
   */
  #weighSequences(dlogits: DeviceBuffer, weigh: SequenceWeigher, logitSums: Float64Array): void {
    const { V } = this.#nv();
    const seqLoss = this.#sequenceSums();
    const weights = weigh(seqLoss);
    if (weights.length !== this.B || !weights.every(Number.isFinite)) {
      throw new Error(`sequence weights must be ${this.B} finite numbers, got [${weights}]`);
    }
    const rows = this.T * V;
    for (let b = 0; b < this.B; b++) {
      if (weights[b] !== 1) this.#be.scale(this.#be.view(dlogits, b * rows, rows), weights[b]);
    }
    const tokens = new Int32Array(this.B);
    const tg = this.#hostTargets;
    for (let i = 0; i < tg.length; i++) if (tg[i] !== -100) tokens[Math.floor(i / this.T)]++;
    this.#weighed = { seqLoss, weights, logitSums, tokens };
  }

  /** x *= the embedding multiplier (Gemma's sqrt(dim)); nothing when it is 1. */
  #scaleEmbeddings(x: DeviceBuffer): void {
    if (this.#embedScale !== 1) this.#be.scale(x, this.#embedScale);
  }

  #needCaches(): InferenceState {
    if (!this.#inf) throw new Error("call setupCaches(batch, capacity) before prefill/decodeStep");
    return this.#inf;
  }

  #growRope(len: number): void {
    const be = this.#be;
    const t = ropeTables(headSize(this.cfg), len, this.cfg.ropeTheta, this.cfg.ropeScaling);
    const old = this.#rope;
    const fresh = uploadRope(be, t);
    // the attention modules hold the rope object: update it in place
    be.free(old.cos);
    be.free(old.sin);
    old.cos = fresh.cos;
    old.sin = fresh.sin;
    old.maxSeqLen = fresh.maxSeqLen;
  }

  #inferStep(tokens: Int32Array): DeviceBuffer {
    const be = this.#be;
    const inf = this.#inf!;
    const B = inf.B;
    const T = tokens.length / B;
    if (!Number.isInteger(T) || T < 1) {
      throw new Error(`got ${tokens.length} tokens for batch ${B}`);
    }
    if (inf.pos + T > inf.capacity) {
      throw new TuneError(
        `generation reached position ${
          inf.pos + T
        }, beyond the cache capacity ${inf.capacity}; lower max_new_tokens`,
      );
    }
    const V = this.cfg.vocabSize;
    const C = this.cfg.dim;
    for (const t of tokens) {
      if (!(t >= 0 && t < V)) {
        throw new TuneError(`token id ${t} is outside the vocabulary (size ${V})`);
      }
    }
    const N = B * T;
    const tok = be.view(inf.tokens, 0, N);
    be.upload(tok, tokens);
    const acts = viewActs(be, inf.acts, { ...this.#dims, B, T }, this.spec.lora?.rank ?? 0);
    const x0 = be.view(inf.resid[0], 0, N * C);
    const x1 = be.view(inf.resid[1], 0, N * C);
    be.embeddingForward(x0, tok, this.#tokEmb, N, C, tokens);
    this.#scaleEmbeddings(x0);
    let x = x0;
    let y = x1;
    for (let l = 0; l < this.cfg.nLayers; l++) {
      this.#layers[l].forward(be, y, x, acts, B, T, null, inf.caches[l], inf.pos);
      [x, y] = [y, x];
    }
    for (let b = 0; b < B; b++) {
      be.copy(be.view(inf.last, b * C, C), be.view(x, (b * T + T - 1) * C, C));
    }
    this.#norm.forward(be, inf.lnLast, inf.rstdLast, inf.last, B); // (B, C)
    this.#output.forward(be, inf.logits, inf.lnLast, B, inf.headHs, null); // (B, V)
    inf.pos += T;
    return inf.logits;
  }
}

function headSeed(seed: number | null, L: number): number | null {
  return seed === null ? null : mixSeed(seed, L, 0x4ead);
}

/** Views of exact length into (larger) activation buffers, for a smaller (B, T). */
function viewActs(be: Backend, a: LayerActs, d: ActDims, rank: number): LayerActs {
  const N = d.B * d.T;
  const Q = d.NH * d.HS;
  const KV = d.NKV * d.HS;
  const v = (buf: DeviceBuffer, n: number) => be.view(buf, 0, n);
  const hs: LayerActs["hs"] = {};
  for (const [k, buf] of Object.entries(a.hs)) hs[k as LayerLinear] = v(buf, N * rank);
  return {
    ln1: v(a.ln1, N * d.C),
    rstd1: v(a.rstd1, N),
    q: v(a.q, N * Q),
    k: v(a.k, N * KV),
    v: v(a.v, N * KV),
    att: v(a.att, N * Q),
    lse: v(a.lse, d.B * d.NH * d.T),
    h1: v(a.h1, N * d.C),
    ln2: v(a.ln2, N * d.C),
    rstd2: v(a.rstd2, N),
    gate: v(a.gate, N * d.H),
    up: v(a.up, N * d.H),
    act: v(a.act, N * d.H),
    hs,
  };
}
