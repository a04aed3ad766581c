/**
 * GRPO with verifiable rewards, full or LoRA by the model builder, on one or more processes (torchtune's
 * dev/grpo_full_finetune_distributed; grpo_finetune_single_device and grpo_finetune_distributed
 * are the entry points):
 *
 *   deno task tune run grpo_finetune_single_device --config tiny/grpo_single_device
 *   deno task tune run --nproc_per_node 2 grpo_finetune_distributed --config tiny/grpo_single_device
 *
 * This file is the GRPO task (src/training/tasks.ts): the prompts (the data) and the step,
 * passed to the fine-tuning recipe (recipes/finetune.ts), which does everything else (setup,
 * the loop, PEFT and merged checkpoints, exact resume, Ctrl-C, metrics, sharding).
 *
 * One generation round takes `batch_size` prompts (over all ranks; each rank takes whole
 * prompts, so a group's advantages never cross ranks), samples `grpo_samples` (G) completions
 * of each with the current policy (KV-cache sampling at `temperature` / `top_k` / `top_p`,
 * each sequence stopping on its own stop token; per-prompt seeds, so any split over ranks
 * samples what one device does), scores them with `reward_fns` (summed) and normalises the
 * rewards within each group into advantages. The round then makes `ppo_epochs` optimizer
 * steps over its sequences (micro-batches of `forward_batch_size`), each the loss chosen by
 * `loss` (src/rlhf/grpo_loss.ts) against the log-probabilities of the policy that generated
 * them (kept from before the first step; with ppo_epochs 1 the ratio is taken against the
 * current policy itself, as TRL) and, when beta > 0, the reference model: under LoRA the
 * frozen base with the adapters off, under full fine-tuning a frozen inference-only copy of
 * the starting weights (`ref_checkpointer`, else the checkpointer's; torchtune's layout).
 * Sampling needs whole weights: one process samples on the training model; N processes
 * gather the sharded weights once per round into an inference-only copy on every rank.
 *
 * Metrics per step besides loss/lr/grad_norm: reward and reward_std, rewards/<fn>/mean and
 * /std, success_rate (all functions succeed), completion_length, kl, clip_ratio/low_mean,
 * /high_mean, /region_mean, entropy (of the sampling policy at temperature 1, per generated
 * token), generation_tokens_per_s; completions go to completions.jsonl every
 * `log_completions_every_n_steps`; reward_curve.svg at the end.
 */
import "../src/components.ts";
import { join } from "node:path";
import { atomicWrite } from "../src/checkpoint/atomic_write.ts";
import { instantiate } from "../src/config/instantiate.ts";
import type { LaunchOptions } from "../src/config/recipe.ts";
import type { ComponentSection, ParamSchema, ResolvedConfig } from "../src/config/schema.ts";
import { TuneError } from "../src/errors.ts";
import type { Backend } from "../src/backend/ops.ts";
import type { Checkpointer } from "../src/checkpoint/checkpointer.ts";
import { createLlama, type LlamaModel } from "../src/models/llama/mod.ts";
import type { ModelSpec } from "../src/models/model_spec.ts";
import type { PromptDatasetBuilder } from "../src/rlhf/grpo_data.ts";
import { groupAdvantages, type GrpoLoss, grpoVariant } from "../src/rlhf/grpo_loss.ts";
import { type Rollout, rollout } from "../src/rlhf/grpo_rollout.ts";
import { roundMetrics, roundPrompts, roundSums } from "../src/rlhf/grpo_round.ts";
import { GrpoMicroBatch, GrpoStepStats, negate, tokenWeightedHead } from "../src/rlhf/grpo_step.ts";
import {
  buildRewards,
  checkGrpoConfig,
  configDirOf,
  logCompletions,
} from "../src/rlhf/grpo_setup.ts";
import { rewardCurveSvg } from "../src/training/loss_plot.ts";
import { allSum } from "../src/training/parallel.ts";
import { withoutKeys } from "../src/training/recipe_params.ts";
import { VALIDATION_KEYS } from "../src/training/validation.ts";
import type { FinetuneHooks, FinetuneResult } from "../src/training/recipe_api.ts";
import type { TaskBuilder } from "../src/training/tasks.ts";
import {
  FinetuneRecipe,
  launchedName,
  loraKeyAliases,
  params as finetuneParams,
  type RecipeKeys,
  runFinetune,
} from "./finetune.ts";

// fine-tuning's keys (full or LoRA, by the model builder) less the SFT-only ones: validation
// on SFT data, the cross-entropy loss, and accumulation (micro-batches: forward_batch_size)
const loraKeys = withoutKeys(finetuneParams, [
  ...VALIDATION_KEYS,
  "gradient_accumulation_steps",
  "loss",
]);

/** Every top-level key of the GRPO recipes (LoRA fine-tuning's keys, GRPO's data and step). */
export const params = {
  ...loraKeys,
  dataset: {
    type: "component",
    kind: "rl_dataset",
    required: true,
    doc: "prompts with answers (gsm8k_dataset, prompt_answer_dataset)",
  },
  loss: {
    type: "component",
    kind: "grpo_loss",
    default: null,
    doc: "GRPO loss (null: tune.rlhf.GRPOLoss, loss_type grpo, beta 0.04)",
  },
  reward_fns: {
    type: "component",
    kind: "reward",
    default: null,
    doc: "list of reward functions, summed (null: torchtune's GSM8K pair: " +
      "at_least_one_space_between_think_tags and math_response_correct); " +
      "file:./x.ts#fn names a function in a module beside the config",
  },
  batch_size: { type: "int", default: 1, doc: "prompts per generation round" },
  grpo_samples: { type: "int", default: 16, doc: "completions per prompt (the group size G)" },
  forward_batch_size: {
    type: "int",
    default: 1,
    doc: "sequences per forward/backward (must divide batch_size * grpo_samples)",
  },
  max_generated_tokens: { type: "int", default: 512, doc: "most new tokens per completion" },
  temperature: { type: "float", default: 1.0, doc: "sampling temperature (0: greedy)" },
  top_k: { type: "int", default: null, doc: "sample among the k most likely tokens (null: all)" },
  top_p: { type: "float", default: null, doc: "nucleus sampling mass (null: off)" },
  ppo_epochs: {
    type: "int",
    default: 1,
    doc: "optimizer steps per generation round",
    bound: { min: 1 },
  },
  num_steps: {
    type: "int",
    default: null,
    doc: "stop after this many generation rounds (torchtune's key; null: run the epochs)",
  },
  save_every_n_epochs: {
    type: "int",
    default: 1,
    doc: "torchtune's key: 1 (a checkpoint at every epoch end) is what this recipe does",
  },
  log_completions_every_n_steps: {
    type: "int",
    default: null,
    doc: "append the round's first completion of each prompt to completions.jsonl (null: never)",
    bound: { min: 1 },
  },
  ref_checkpointer: {
    type: "component",
    kind: "checkpointer",
    default: null,
    doc: "full fine-tuning: the reference model's checkpoint (null: the checkpointer's); " +
      "under LoRA the reference is the base with adapters off, so it must be null",
  },
  name: { type: "string", default: null, doc: "a run name for ${name} interpolation" },
  base_model_path: {
    type: "string",
    default: null,
    doc: "a path for ${base_model_path} interpolation",
  },
  output_dir: { type: "string", default: "out/grpo", doc: "checkpoints and logs go here" },
} satisfies ParamSchema;

/** The same top-level aliases as LoRA fine-tuning (`lora_rank=4`, ...). */
export const keyAliases = {
  ...loraKeyAliases,
  reward_functions: "reward_fns", // torchtune's sync GRPO configs' name
};

/** The resolved keys of the GRPO recipes. */
export type GrpoKeys = ResolvedConfig<typeof params>;

/** What a round keeps for its ppo_epochs steps (this rank's share). */
interface Round {
  key: string;
  r: Rollout;
  advantages: Float64Array; // (S_rank)
  old: Float64Array | null; // (S_rank*T) the generating policy's log-probs
  ref: Float64Array | null; // (S_rank*T)
  /** Completion tokens of the whole round (all ranks). */
  tokens: number;
  metrics: Record<string, number>;
}

/**
 * Full fine-tuning's reference model: inference-only, with the weights of `ref_checkpointer`
 * (else the checkpointer's), or the policy's seeded random init under model_init random.
 */
function referenceModel(
  cfg: GrpoKeys,
  spec: ModelSpec,
  rt: { backend: Backend },
  o: { batch: number; seqLen: number; seed: number },
): LlamaModel {
  const ref = createLlama(rt.backend, spec, {
    batch: o.batch,
    seqLen: o.seqLen,
    seed: o.seed,
    logitChunks: 1,
    training: false,
  });
  if (cfg.model_init === "checkpoint") {
    const ck = instantiate<Checkpointer>(cfg.ref_checkpointer ?? cfg.checkpointer);
    ref.loadStateDict(ck.load({ resumeFromCheckpoint: false }).stateDict);
  } else {
    ref.initRandom(o.seed);
  }
  return ref;
}

/** Full or LoRA fine-tuning, by the model builder. */
function methodOf(cfg: GrpoKeys): "full" | "lora" {
  return instantiate<ModelSpec>(cfg.model).lora ? "lora" : "full";
}

/** The GRPO task: this rank's prompts, the rounds and the loss head. */
export function grpoTask(cfg: GrpoKeys, configDir: string): TaskBuilder {
  return async ({ rt, tokenizer, spec, seed }) => {
    const W = rt.worldSize;
    const lora = !!spec.lora;
    checkGrpoConfig(cfg, lora);
    if (cfg.batch_size % W !== 0) {
      throw new TuneError(
        `batch_size=${cfg.batch_size}: each of the ${W} ranks takes whole prompts; use a multiple of ${W}`,
      );
    }
    const per = cfg.batch_size / W; // prompts of a round on this rank
    const S = per * cfg.grpo_samples;
    if (S % cfg.forward_batch_size !== 0) {
      throw new TuneError(
        `forward_batch_size=${cfg.forward_batch_size}: must divide ` +
          (W > 1 ? `a rank's sequences ${S}` : `batch_size * grpo_samples = ${S}`),
      );
    }
    const loss = cfg.loss ? instantiate<GrpoLoss>(cfg.loss) : grpoVariant("grpo");
    const rewards = await buildRewards(
      cfg.reward_fns as ComponentSection | ComponentSection[] | null,
      configDir,
    );
    const prompts = await instantiate<PromptDatasetBuilder>(cfg.dataset).load(tokenizer);
    const longest = prompts.samples.reduce((m, p) => Math.max(m, p.tokens.length), 0);
    const T = longest + cfg.max_generated_tokens;
    if (T > spec.config.maxSeqLen) {
      throw new TuneError(
        `the longest prompt (${longest} tokens) + max_generated_tokens (${cfg.max_generated_tokens}) = ${T} exceeds the model's max_seq_len ${spec.config.maxSeqLen}; lower max_generated_tokens`,
      );
    }
    const rounds = Math.floor(prompts.samples.length / cfg.batch_size);
    if (rounds === 0) {
      throw new TuneError(
        `batch_size=${cfg.batch_size} exceeds the ${prompts.samples.length} prompts of the dataset`,
      );
    }
    const ppo = cfg.ppo_epochs, FB = cfg.forward_batch_size, rows = FB * T;
    // full fine-tuning's reference: a frozen copy of the starting weights (LoRA: adapters off)
    const refModel = !lora && loss.beta > 0
      ? referenceModel(cfg, spec, rt, { batch: FB, seqLen: T, seed })
      : null;
    return {
      shape: { batch: FB, seqLen: T, logitChunks: 1, batchesPerEpoch: rounds * ppo },
      validation: null,
      head: (model, _calls, full) => {
        let sampler: LlamaModel | null = null;
        let round: Round | null = null;
        /** The model sampling runs on: the training model, or (sharded) a gathered copy. */
        const samplingModel = async (): Promise<LlamaModel> => {
          if (!rt.sharded) return model;
          sampler ??= createLlama(rt.backend, spec as ModelSpec, {
            batch: cfg.grpo_samples,
            seqLen: T,
            training: false,
          });
          const m = sampler;
          await full(() => m.loadStateDict(model.stateDict()));
          return m;
        };
        /** (S*T) log-probs of this rank's sequences under `adapters` (true: the policy). */
        const logProbs = async (r: Rollout, adapters: boolean) => {
          const out = new Float64Array(r.S * T);
          for (let b = 0; b < r.S; b += FB) {
            const tokens = r.tokens.subarray(b * T, b * T + rows);
            const targets = r.targets.subarray(b * T, b * T + rows);
            const e = !adapters && refModel
              ? await refModel.evalLosses({ tokens, targets })
              : await model.evalLosses({ tokens, targets }, { adapters });
            out.set(negate(e.rowLoss()), b * T);
          }
          return out;
        };
        const newRound = async (epoch: number, i: number): Promise<Round> => {
          const all = roundPrompts(prompts.samples, {
            perRound: cfg.batch_size,
            seed,
            epoch,
            round: i,
            shuffle: cfg.shuffle,
          });
          const mine = (a: readonly unknown[]) => a.slice(rt.rank * per, (rt.rank + 1) * per);
          const r = rollout(
            await samplingModel(),
            rt.backend,
            tokenizer,
            mine(all.prompts) as typeof all.prompts,
            rewards,
            {
              G: cfg.grpo_samples,
              T,
              maxNewTokens: cfg.max_generated_tokens,
              temperature: cfg.temperature,
              topK: cfg.top_k,
              topP: cfg.top_p,
              seeds: mine(all.seeds) as number[],
            },
          );
          const advantages = groupAdvantages(r.rewards.total, cfg.grpo_samples, loss.scaleRewards);
          // old log-probs only matter when a round makes several steps (TRL's num_iterations > 1)
          const old = ppo > 1 && !loss.onPolicy ? await logProbs(r, true) : null;
          const ref = loss.beta > 0 ? await logProbs(r, false) : null;
          let tokens = 0;
          for (const t of r.targets) if (t !== -100) tokens++;
          const sums = await allSum(rt, [tokens, ...roundSums(r)]);
          const metrics = roundMetrics(r.rewards.names, sums.slice(1), W);
          return { key: `${epoch}/${i}`, r, advantages, old, ref, tokens: sums[0], metrics };
        };
        return {
          async step(epoch, s, _ga) {
            const i = Math.floor(s / ppo);
            if (s % ppo === 0 || round?.key !== `${epoch}/${i}`) {
              if (s % ppo !== 0) {
                throw new TuneError(
                  `resuming inside a generation round (step ${s} of epoch ${epoch}, ppo_epochs ${ppo}) is not possible; resume from a checkpoint on a round boundary`,
                );
              }
              round = await newRound(epoch, i);
              if (rt.isMain) logCompletions(cfg, epoch * rounds * ppo + s + 1, round);
            }
            const { r } = round;
            const counts = {
              sequences: r.S * W,
              tokens: round.tokens,
              maxCompletionLength: cfg.max_generated_tokens,
            };
            const stats = new GrpoStepStats();
            for (let b = 0; b < r.S; b += FB) {
              const part = (a: Float64Array | null) => a ? a.subarray(b * T, b * T + rows) : null;
              const targets = r.targets.subarray(b * T, b * T + rows);
              const mb = new GrpoMicroBatch(
                loss,
                targets,
                part(round.old),
                part(round.ref),
                round.advantages.subarray(b, b + FB),
                counts,
                stats,
              );
              // one step per round: the ratio is against the policy itself (TRL)
              if (!round.old && !loss.onPolicy) mb.useCurrentAsOld();
              const tokens = r.tokens.subarray(b * T, b * T + rows);
              await model.trainStep({ tokens, targets }, tokenWeightedHead(mb.weigh));
            }
            const total = GrpoStepStats.fromValues(await allSum(rt, stats.values()));
            return {
              loss: total.loss,
              tokens: round.tokens,
              metrics: { ...round.metrics, ...total.metrics() },
            };
          },
          free() {
            sampler?.free();
            refModel?.free();
          },
        };
      },
    };
  };
}

/** A LoRA model builder, or a one-line error naming what GRPO supports. */
export function checkLoraModel(section: ComponentSection, recipe: string): void {
  if (!instantiate<ModelSpec>(section).lora) {
    throw new TuneError(
      `${recipe} trains LoRA adapters (the reference is the base with adapters off); ` +
        `model ${section._component_} has none: use a lora_* builder (e.g. tune.models.lora_llama)`,
    );
  }
}

/** The recipe's keys for the fine-tuning loop: one micro-batch list per step, num_steps as steps. */
function loopKeys(cfg: GrpoKeys): RecipeKeys {
  // the loop's stop_after_steps counts optimizer steps: torchtune's num_steps counts rounds
  const stop = cfg.stop_after_steps ??
    (cfg.num_steps === null ? null : cfg.num_steps * cfg.ppo_epochs);
  return {
    ...cfg,
    gradient_accumulation_steps: 1,
    stop_after_steps: stop,
  } as unknown as RecipeKeys;
}

type GrpoRunOptions = { name: string; launch: LaunchOptions; hooks?: FinetuneHooks };

/** The fine-tuning recipe with the GRPO task, not yet set up (the demo drives it itself). */
export function grpoRecipe(cfg: GrpoKeys, opts: GrpoRunOptions): FinetuneRecipe {
  const task = grpoTask(cfg, configDirOf(opts.launch));
  return new FinetuneRecipe(loopKeys(cfg), { ...opts, method: methodOf(cfg), task });
}

/** Run the recipe in this process and return what it produced. */
export async function runGrpo(
  cfg: GrpoKeys,
  opts: GrpoRunOptions,
): Promise<FinetuneResult & { exitCode: number }> {
  const task = grpoTask(cfg, configDirOf(opts.launch));
  const r = await runFinetune(loopKeys(cfg), { ...opts, method: methodOf(cfg), task });
  if (r.steps.length && (Deno.env.get("RANK") ?? "0") === "0") {
    const curve = join(cfg.output_dir, "reward_curve.svg");
    atomicWrite(curve, new TextEncoder().encode(rewardCurveSvg(r.steps)));
  }
  return r;
}

/** Run the recipe on this rank; exit 130/143 after a stop request. */
export async function main(cfg: GrpoKeys, launch: LaunchOptions) {
  const r = await runGrpo(cfg, { name: launchedName(launch, "grpo"), launch });
  r.model.free();
  if (r.exitCode) Deno.exit(r.exitCode);
}
