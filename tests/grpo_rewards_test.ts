/**
 * GRPO rewards and prompt datasets:
 * - torchtune's GSM8K format reward and tag extraction against Python's `re`
 *   (tests/reference/grpo_rewards_reference.py -> tests/fixtures/grpo_rewards_cases.json);
 * - the answer reward, exact match, regex match and length penalty on hand-checked cases;
 * - a user's reward from `file:./x.ts#fn`, resolved relative to the config's folder, and the
 *   config resolver accepting it in a `reward` list;
 * - torchtune's gsm8k_dataset (prompt, answer after "#### ", partition) and
 *   prompt_answer_dataset over local JSON Lines.
 */
import { ok as assert, rejects, strictEqual, throws } from "node:assert";
import "../src/components.ts";
import { findComponent } from "../src/config/registry.ts";
import { resolveComponent } from "../src/config/resolve.ts";
import { TuneError } from "../src/errors.ts";
import { demoTokenizerBytes } from "../src/demo/tokenizer.ts";
import { tokenizerFromBytes } from "../src/tokenizers/load.ts";
import type { PromptDatasetBuilder } from "../src/rlhf/grpo_data.ts";
import {
  extractTags,
  loadFileReward,
  type RewardFn,
  type RewardSample,
  scoreAll,
} from "../src/rlhf/rewards.ts";

const build = <T>(name: string, args: Record<string, unknown> = {}): T => {
  const sec = resolveComponent(findComponent(name)!.kind, { _component_: name, ...args }, "x", {
    recipe: "test",
  } as never);
  const { _component_: _, ...rest } = sec;
  return findComponent(name)!.build(rest) as T;
};

const sample = (completion: string, answer = "", ids = 0): RewardSample => ({
  prompt: "",
  completion,
  answer,
  completionIds: new Int32Array(ids),
});

interface Case {
  completion: string;
  cot: string;
  answer: string;
  format_reward: number;
  format_success: number;
  think_reward: number;
}

Deno.test("torchtune's GSM8K format reward and tag extraction match Python's re", async () => {
  const cases = JSON.parse(
    Deno.readTextFileSync(new URL("./fixtures/grpo_rewards_cases.json", import.meta.url)),
  ) as Case[];
  const fmt = build<RewardFn>("torchtune.dev.rl.rewards.ThinkingAnswerFormattingReward");
  const think = build<RewardFn>("tune.rewards.gsm8k_format");
  for (const c of cases) {
    const t = extractTags(c.completion);
    strictEqual(t.cot, c.cot, JSON.stringify(c.completion));
    strictEqual(t.answer, c.answer, JSON.stringify(c.completion));
    const f = await fmt.score(sample(c.completion));
    strictEqual(f.reward, c.format_reward, `format ${JSON.stringify(c.completion)}`);
    strictEqual(f.success, c.format_success);
    strictEqual((await think.score(sample(c.completion))).reward, c.think_reward);
  }
  assert(cases.some((c) => c.format_reward === 2) && cases.some((c) => c.format_reward === 1));
});

Deno.test("math_response_correct gives 100 / 50 / 1 / 0 as torchtune's", async () => {
  const r = build<RewardFn>("torchtune.dev.rl.rewards.math_response_correct");
  const got = [];
  for (
    const c of [
      "x</think> <answer>1,200</answer>",
      "x</think> <answer>$1200</answer>",
      "x</think> <answer>1200 dollars</answer>",
      "x</think> <answer>12</answer>",
      "x</think> 1200",
    ]
  ) got.push((await r.score(sample(c, "1200"))).reward);
  strictEqual(JSON.stringify(got), JSON.stringify([100, 100, 50, 1, 0]));
});

Deno.test("exact match, regex match and length penalty score as documented", async () => {
  const em = build<RewardFn>("tune.rewards.exact_match");
  strictEqual((await em.score(sample(" bcd\n", "bcd"))).reward, 1);
  strictEqual((await em.score(sample("bce", "bcd"))).success, 0);
  const strict = build<RewardFn>("tune.rewards.exact_match", { strip: false });
  strictEqual((await strict.score(sample(" bcd", "bcd"))).reward, 0);
  const re = build<RewardFn>("tune.rewards.regex_match", {
    pattern: "answer: {answer}",
    positive_reward: 2,
  });
  strictEqual((await re.score(sample("so answer: 3.5!", "3.5"))).reward, 2);
  strictEqual((await re.score(sample("so answer: 3x5", "3.5"))).reward, 0); // . escaped
  const full = build<RewardFn>("tune.rewards.regex_match", { pattern: "\\d+", full_match: true });
  strictEqual((await full.score(sample("12a"))).reward, 0);
  strictEqual((await full.score(sample("12"))).reward, 1);
  const lp = build<RewardFn>("tune.rewards.length_penalty", { free_tokens: 3, coefficient: 0.5 });
  strictEqual((await lp.score(sample("", "", 7))).reward, -2);
  strictEqual((await lp.score(sample("", "", 2))).reward, -0);
  throws(() => build("tune.rewards.regex_match", { pattern: "(" }), TuneError);
});

Deno.test("a file: reward loads relative to the config's folder and sums with others", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    Deno.mkdirSync(`${dir}/rewards`);
    Deno.writeTextFileSync(
      `${dir}/rewards/mine.ts`,
      "export function score(s: { completion: string; answer: string }) {\n" +
        "  return s.completion.length === s.answer.length ? 0.5 : -1;\n}\n" +
        "export const tagged = (s: { completion: string }) =>\n" +
        "  ({ reward: s.completion.includes('!') ? 3 : 0, success: 1 });\n" +
        "export const later = async () => 1;\n",
    );
    const sec = resolveComponent("reward", { _component_: "file:./rewards/mine.ts#tagged" }, "r", {
      recipe: "test",
    } as never);
    strictEqual(sec._component_, "file:./rewards/mine.ts#tagged");
    throws(
      () =>
        resolveComponent("reward", { _component_: "file:./m.ts", weight: 2 }, "r", {
          recipe: "t",
        } as never),
      /takes no other keys/,
    );
    const plain = await loadFileReward("file:./rewards/mine.ts", dir);
    const tagged = await loadFileReward(sec._component_, dir);
    strictEqual(plain.name, "mine");
    const t = await scoreAll([plain, tagged], [sample("ab!", "xyz"), sample("a", "xyz")]);
    strictEqual(JSON.stringify([...t.total]), JSON.stringify([3.5, -1]));
    strictEqual(JSON.stringify([...t.successes]), JSON.stringify([1, 1, 0, 1]));
    const later = await loadFileReward("file:./rewards/mine.ts#later", dir);
    throws(() => later.score(sample("a")), /returned a promise/);
    await rejects(loadFileReward("file:./nope.ts#score", dir), /does not exist/);
    await rejects(loadFileReward("file:./rewards/mine.ts#other", dir), /no exported function/);
    await rejects(loadFileReward("file:mine.py", dir), /file:.\/my_reward.ts#score/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("gsm8k_dataset: torchtune's prompt, the answer after ####, partition", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const rows = [0, 1, 2, 3, 4].map((i) => ({
      question: `What is ${i} + 1?`,
      answer: `${i} + 1 = <<${i}+1=${i + 1}>>${i + 1}\n#### ${i + 1}`,
    }));
    Deno.writeTextFileSync(`${dir}/g.jsonl`, rows.map((r) => JSON.stringify(r)).join("\n"));
    const tok = tokenizerFromBytes(demoTokenizerBytes([]), "demo");
    const ds = await build<PromptDatasetBuilder>("torchtune.dev.grpo.gsm8k.gsm8k_dataset", {
      source: "json",
      data_files: `${dir}/g.jsonl`,
      partition: "1-2/4",
    }).load(tok);
    strictEqual(ds.samples.length, 2); // rows 1 and 2 of 0..4 (4 % 4 = 0 is out)
    strictEqual(ds.samples[0].answer, "2");
    assert(ds.samples[0].prompt.endsWith("User: What is 1 + 1?. Assistant: <think>"));
    assert(ds.samples[0].prompt.startsWith("A conversation between User and Assistant."));
    assert(tok.decode(ds.samples[0].tokens).includes("User: What is 1 + 1?. Assistant: <think>"));
    strictEqual(ds.samples[0].tokens[0], tok.bosId);
    throws(
      () => build("torchtune.dev.grpo.gsm8k.gsm8k_dataset", { partition: "1/4" }),
      /start-end/,
    );
    Deno.writeTextFileSync(
      `${dir}/p.jsonl`,
      JSON.stringify({ word: "abc", shifted: "bcd" }) + "\n",
    );
    const pa = await build<PromptDatasetBuilder>("tune.datasets.prompt_answer_dataset", {
      source: "json",
      data_files: `${dir}/p.jsonl`,
      column_map: { prompt: "word", answer: "shifted" },
      prompt_template: "shift {prompt}:",
    }).load(tok);
    strictEqual(pa.samples[0].prompt, "shift abc:");
    strictEqual(pa.samples[0].answer, "bcd");
    const bad = build<PromptDatasetBuilder>("tune.datasets.prompt_answer_dataset", {
      source: "json",
      data_files: `${dir}/p.jsonl`,
    });
    await rejects(bad.load(tok), /no text column 'prompt'/);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
