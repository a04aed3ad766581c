/**
 * `_component_` builders of GRPO (src/rlhf/grpo_loss.ts, rewards.ts, grpo_data.ts),
 * registered with src/config/registry.ts. Imported (for its side effect) by src/components.ts.
 */
import { registerComponent } from "../config/registry.ts";
import type { ComponentSpec, ParamSchema } from "../config/schema.ts";
import { TuneError } from "../errors.ts";
import {
  gsm8kAnswer,
  partitionFilter,
  promptAnswerDataset,
  type PromptDatasetBuilder,
  R1_PROMPT,
} from "./grpo_data.ts";
import {
  exactMatchReward,
  formattingReward,
  lengthPenalty,
  mathAnswerReward,
  mathCorrectnessReward,
  regexMatchReward,
  type RewardFn,
  thinkReward,
} from "./rewards.ts";
import { type GrpoLoss, grpoVariant, validateGrpoLoss } from "./grpo_loss.ts";

// ---------------------------------------------------------------- rewards

type RewardSpec = Pick<ComponentSpec<RewardFn>, "name" | "aliases" | "doc" | "params">;

/** Register a reward builder. */
function registerReward(spec: RewardSpec, build: (a: Record<string, unknown>) => RewardFn): void {
  registerComponent<RewardFn>({ ...spec, kind: "reward", build });
}

/** The values of a pass/fail reward: `positive_reward` when it holds, else `negative_reward`. */
const REWARD_VALUES: ParamSchema = {
  positive_reward: { type: "float", default: 1, doc: "reward when it holds" },
  negative_reward: { type: "float", default: 0, doc: "reward when it does not" },
};

/** Register a pass/fail reward: its own keys plus REWARD_VALUES, which `build` gets read. */
function registerPassFailReward(
  spec: RewardSpec,
  build: (a: Record<string, unknown>, values: { positive: number; negative: number }) => RewardFn,
): void {
  registerReward(
    { ...spec, params: { ...spec.params, ...REWARD_VALUES } },
    (a) =>
      build(a, { positive: a.positive_reward as number, negative: a.negative_reward as number }),
  );
}

registerPassFailReward({
  name: "torchtune.dev.rl.rewards.ThinkingAnswerFormattingReward",
  aliases: ["tune.rewards.formatting", "ThinkingAnswerFormattingReward"],
  doc:
    "soft (one <think> then one <answer> block) plus strict (tags on their own lines) format reward",
  params: {
    think_tag: { type: "string", default: "think", doc: "the chain-of-thought tag" },
    answer_tag: { type: "string", default: "answer", doc: "the answer tag" },
  },
}, (a, values) =>
  formattingReward({
    thinkTag: a.think_tag as string,
    answerTag: a.answer_tag as string,
    ...values,
  }));

registerReward({
  name: "torchtune.dev.rl.rewards.at_least_one_space_between_think_tags",
  aliases: ["tune.rewards.gsm8k_format"],
  doc:
    "GSM8K format reward: 1 when <think>...</think> holds some text (torchtune's batched_rewards)",
  params: {},
}, () => thinkReward);

registerReward({
  name: "torchtune.dev.rl.rewards.math_response_correct",
  aliases: ["tune.rewards.gsm8k_answer"],
  doc: "GSM8K answer reward: 100 right, 50 containing the answer, 1 any <answer>, else 0",
  params: {},
}, () => mathAnswerReward);

registerPassFailReward({
  name: "torchtune.dev.rl.rewards.FormattedMathCorrectnessReward",
  aliases: ["FormattedMathCorrectnessReward"],
  doc:
    "the completion's last number equals the answer (positive), contains it (half), else negative",
  params: {
    answer_tag: {
      type: "string",
      default: "answer",
      doc: "accepted for torchtune's signature; torchtune's code does not use it either",
    },
  },
}, (_a, values) => mathCorrectnessReward(values.positive, values.negative));

registerPassFailReward({
  name: "tune.rewards.exact_match",
  aliases: ["exact_match"],
  doc: "the completion equals the dataset's answer",
  params: {
    strip: { type: "bool", default: true, doc: "compare with surrounding whitespace removed" },
  },
}, (a, values) => exactMatchReward({ strip: a.strip as boolean, ...values }));

registerPassFailReward({
  name: "tune.rewards.regex_match",
  aliases: ["regex_match"],
  doc: "the completion matches a regular expression ({answer} = the escaped answer)",
  params: {
    pattern: { type: "string", required: true, doc: "JavaScript regular expression" },
    full_match: { type: "bool", default: false, doc: "the whole completion must match" },
  },
}, (a, values) =>
  regexMatchReward({
    pattern: a.pattern as string,
    full: a.full_match as boolean,
    ...values,
  }));

registerReward(
  {
    name: "tune.rewards.length_penalty",
    aliases: ["length_penalty"],
    doc: "-coefficient per completion token beyond free_tokens",
    params: {
      free_tokens: { type: "int", default: 0, doc: "tokens without penalty", bound: { min: 0 } },
      coefficient: {
        type: "float",
        default: 0.01,
        doc: "penalty per extra token",
        bound: { min: 0 },
      },
    },
  },
  (a) =>
    lengthPenalty({ freeTokens: a.free_tokens as number, coefficient: a.coefficient as number }),
);

// ---------------------------------------------------------------- losses

registerComponent<GrpoLoss>({
  name: "tune.rlhf.GRPOLoss",
  aliases: ["GRPOLoss"],
  kind: "grpo_loss",
  doc: "GRPO's clipped policy-ratio loss with a k3 KL penalty (TRL's loss types)",
  params: {
    loss_type: {
      type: "string",
      default: "grpo",
      choices: ["grpo", "bnpo", "dr_grpo", "dapo"],
      doc: "grpo: per-sequence token mean; bnpo/dapo: mean over all tokens; dr_grpo: sum / " +
        "(sequences * max_generated_tokens), no std division; dapo: clip-higher 0.28",
    },
    epsilon: {
      type: "float",
      default: 0.2,
      doc: "lower clip range (and upper unless epsilon_high)",
    },
    epsilon_high: {
      type: "float",
      default: null,
      doc: "upper clip range (DAPO's clip-higher); null: epsilon (dapo: 0.28)",
    },
    beta: { type: "float", default: 0.04, doc: "KL coefficient; 0 skips the reference model" },
    scale_rewards: {
      type: "bool",
      default: null,
      doc: "divide advantages by the group std; null: the loss type's own (dr_grpo: no)",
    },
  },
  build: (a) => {
    const v = grpoVariant(a.loss_type as string, {
      epsilon: a.epsilon as number,
      epsilonHigh: a.epsilon_high as number | null,
      beta: a.beta as number,
    });
    if (a.scale_rewards !== null) v.scaleRewards = a.scale_rewards as boolean;
    return v;
  },
});

/**
 * torchtune's GRPOLoss (`onPolicy` false) or GRPOSimpleLoss (true) from their epsilon and
 * kl_coeff keys; rewards always scaled by the group std.
 */
function torchtuneGrpoLoss(
  a: Record<string, unknown>,
  name: string,
  normalization: GrpoLoss["normalization"],
  onPolicy: boolean,
): GrpoLoss {
  return validateGrpoLoss({
    name,
    normalization,
    scaleRewards: true,
    epsLow: a.epsilon as number,
    epsHigh: a.epsilon as number,
    beta: a.kl_coeff as number,
    onPolicy,
  });
}

registerComponent<GrpoLoss>({
  name: "torchtune.dev.grpo.loss.GRPOLoss",
  aliases: ["torchtune.dev.rl.loss.GRPOLoss"],
  kind: "grpo_loss",
  doc: "torchtune's GRPOLoss: clipped token ratios, masked mean over all tokens of the batch",
  params: {
    epsilon: { type: "float", default: 0.1, doc: "clip range" },
    kl_coeff: { type: "float", default: 0.1, doc: "KL coefficient (beta)" },
  },
  build: (a) => torchtuneGrpoLoss(a, "torchtune.GRPOLoss", "token", false),
});

registerComponent<GrpoLoss>({
  name: "torchtune.dev.grpo.loss.GRPOSimpleLoss",
  aliases: ["torchtune.dev.rl.loss.GRPOSimpleLoss"],
  kind: "grpo_loss",
  doc: "torchtune's GRPOSimpleLoss: ratio against the current policy (one step per batch), " +
    "per-sequence token mean",
  params: {
    epsilon: {
      type: "float",
      default: 0.1,
      doc: "accepted for torchtune's signature: the on-policy ratio is 1, so nothing clips",
    },
    kl_coeff: { type: "float", default: 0.1, doc: "KL coefficient (beta)" },
  },
  build: (a) => torchtuneGrpoLoss(a, "torchtune.GRPOSimpleLoss", "sequence", true),
});

// ---------------------------------------------------------------- prompt datasets

const SOURCE = "Hugging Face repo id (owner/name), or json | csv for local data_files";

registerComponent<PromptDatasetBuilder>({
  name: "torchtune.dev.grpo.gsm8k.gsm8k_dataset",
  aliases: ["torchtune.dev.rl.gsm8k.gsm8k_dataset", "tune.datasets.gsm8k_dataset"],
  kind: "rl_dataset",
  doc: "GSM8K questions in torchtune's <think>/<answer> prompt; the answer after '#### '",
  params: {
    source: { type: "string", default: "openai/gsm8k", doc: SOURCE },
    data_files: { type: "any", default: null, doc: "local files when source is json or csv" },
    split: { type: "string", default: "train", doc: "split, optionally sliced (train[:100])" },
    name: { type: "string", default: "main", doc: "the dataset's subset (main or socratic)" },
    partition: {
      type: "string",
      default: null,
      doc: "start-end/total: keep rows whose index % total is in [start, end]",
    },
  },
  build: (a) =>
    promptAnswerDataset({
      name: "torchtune.dev.grpo.gsm8k.gsm8k_dataset",
      source: a.source as string,
      dataFiles: a.data_files as string | string[] | null,
      split: a.split as string,
      subset: a.name as string,
      promptColumn: "question",
      answerColumn: "answer",
      template: R1_PROMPT,
      answerOf: gsm8kAnswer,
      keep: partitionFilter(a.partition as string | null),
    }),
});

registerComponent<PromptDatasetBuilder>({
  name: "tune.datasets.prompt_answer_dataset",
  aliases: ["prompt_answer_dataset"],
  kind: "rl_dataset",
  doc: "any rows with a prompt column and an answer column (GRPO with verifiable rewards)",
  params: {
    source: { type: "string", required: true, doc: SOURCE },
    data_files: { type: "any", default: null, doc: "local files when source is json or csv" },
    split: { type: "string", default: "train", doc: "split, optionally sliced (train[:100])" },
    name: { type: "string", default: null, doc: "the dataset's subset on the Hub" },
    column_map: {
      type: "any",
      default: null,
      doc: "{prompt: COLUMN, answer: COLUMN} (default prompt, answer)",
    },
    prompt_template: {
      type: "string",
      default: null,
      doc: "text with {prompt}; null: the prompt as it is; r1: torchtune's <think>/<answer> prompt",
    },
  },
  build: (a) => {
    const map = (a.column_map ?? {}) as Record<string, unknown>;
    for (const k of Object.keys(map)) {
      if (k !== "prompt" && k !== "answer") {
        throw new TuneError(`dataset.column_map.${k}: only prompt and answer can be mapped`);
      }
    }
    const t = a.prompt_template as string | null;
    return promptAnswerDataset({
      name: "tune.datasets.prompt_answer_dataset",
      source: a.source as string,
      dataFiles: a.data_files as string | string[] | null,
      split: a.split as string,
      subset: a.name as string | null,
      promptColumn: String(map.prompt ?? "prompt"),
      answerColumn: String(map.answer ?? "answer"),
      template: t === "r1" ? R1_PROMPT : t,
    });
  },
});
