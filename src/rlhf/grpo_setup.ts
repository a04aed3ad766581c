/**
 * The GRPO recipes' setup and bookkeeping around the loop (recipes/grpo.ts): where `file:`
 * rewards resolve, the reward functions a config names, the checks of the recipe's keys, and
 * completions.jsonl.
 */
import { dirname, isAbsolute, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { instantiate } from "../config/instantiate.ts";
import type { LaunchOptions } from "../config/recipe.ts";
import type { ComponentSection } from "../config/schema.ts";
import { shippedConfigUrl } from "../config/shipped.ts";
import { TuneError } from "../errors.ts";
import type { Rollout } from "./grpo_rollout.ts";
import { loadFileReward, mathAnswerReward, type RewardFn, thinkReward } from "./rewards.ts";

/** The keys `checkGrpoConfig` reads. */
export interface GrpoScheduleKeys {
  ppo_epochs: number;
  ref_checkpointer: ComponentSection | null;
  save_every_n_epochs: number | null;
  save_every_n_steps: number | null;
  stop_after_steps: number | null;
  grpo_samples: number;
}

/** The keys `logCompletions` reads. */
export interface GrpoLogKeys {
  log_completions_every_n_steps: number | null;
  ppo_epochs: number;
  grpo_samples: number;
  output_dir: string;
}

/** The folder `file:` rewards are resolved against: the config file's (cwd when unknown). */
export function configDirOf(launch: LaunchOptions): string {
  const i = launch.recipeArgv.indexOf("--config");
  const ref = i >= 0 ? launch.recipeArgv[i + 1] : undefined;
  if (!ref) return Deno.cwd();
  try {
    if (Deno.statSync(ref).isFile) return dirname(isAbsolute(ref) ? ref : resolve(ref));
  } catch { /* not a file: a shipped name */ }
  const url = shippedConfigUrl(ref);
  return url ? dirname(fileURLToPath(url)) : Deno.cwd();
}

/** The reward functions a config names (torchtune's GSM8K pair when none). */
export async function buildRewards(
  sections: ComponentSection | ComponentSection[] | null,
  configDir: string,
): Promise<RewardFn[]> {
  if (sections === null) return [thinkReward, mathAnswerReward];
  const list = Array.isArray(sections) ? sections : [sections];
  if (list.length === 0) throw new TuneError("reward_fns is empty; name at least one reward");
  const out: RewardFn[] = [];
  for (const s of list) {
    out.push(
      s._component_.startsWith("file:")
        ? await loadFileReward(s._component_, configDir)
        : instantiate<RewardFn>(s),
    );
  }
  return out;
}

/** The checks both GRPO recipes make on their keys, each a one-line error. */
export function checkGrpoConfig(
  cfg: GrpoScheduleKeys,
  lora: boolean,
): void {
  const ppo = cfg.ppo_epochs;
  const refuse = (key: string, v: unknown, why: string) => {
    throw new TuneError(`${key}=${v}: ${why}`);
  };
  if (lora && cfg.ref_checkpointer !== null) {
    refuse(
      "ref_checkpointer",
      cfg.ref_checkpointer._component_,
      "under LoRA the reference is the base with adapters off; remove ref_checkpointer",
    );
  }
  if (cfg.save_every_n_epochs !== 1) {
    refuse(
      "save_every_n_epochs",
      cfg.save_every_n_epochs,
      "this recipe saves at every epoch end; set 1 (or save_every_n_steps)",
    );
  }
  for (
    const [k, v] of [["save_every_n_steps", cfg.save_every_n_steps], [
      "stop_after_steps",
      cfg.stop_after_steps,
    ]] as const
  ) {
    if (v !== null && v % ppo !== 0) {
      refuse(
        k,
        v,
        `checkpoints fall on generation rounds: use a multiple of ppo_epochs (${ppo})`,
      );
    }
  }
  if (cfg.grpo_samples < 2) {
    refuse(
      "grpo_samples",
      cfg.grpo_samples,
      "group advantages need at least 2 completions per prompt",
    );
  }
}

/** Append each prompt's first completion to completions.jsonl when a step of the round is due. */
export function logCompletions(cfg: GrpoLogKeys, firstStep: number, round: { r: Rollout }): void {
  const every = cfg.log_completions_every_n_steps;
  // the round makes steps first..first+ppo_epochs-1: log it when one of them is due
  const first = firstStep, ppo = cfg.ppo_epochs;
  const step = Math.ceil(first / (every ?? 1)) * (every ?? 1);
  if (every === null || step >= first + ppo) return;
  const G = cfg.grpo_samples, F = round.r.rewards.names.length;
  const lines = [];
  for (let s = 0; s < round.r.S; s += G) {
    lines.push(JSON.stringify({
      step,
      prompt: round.r.samples[s].prompt,
      answer: round.r.samples[s].answer,
      completion: round.r.texts[s],
      reward: round.r.rewards.total[s],
      rewards: Object.fromEntries(
        round.r.rewards.names.map((n, f) => [n, round.r.rewards.rewards[s * F + f]]),
      ),
    }));
  }
  Deno.mkdirSync(cfg.output_dir, { recursive: true });
  Deno.writeTextFileSync(
    `${cfg.output_dir}/completions.jsonl`,
    lines.join("\n") + "\n",
    { append: true },
  );
}
