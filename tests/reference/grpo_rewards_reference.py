"""Reference for tune's GSM8K reward parsing (src/rlhf/rewards.ts): torchtune's
ThinkingAnswerFormattingReward regexes (re.match with DOTALL | MULTILINE, findall) and
extract_tags (torchtune/dev/rl/rewards.py), written out here with Python's re, so the
JavaScript translation is checked against Python's regex semantics.

Run: python3 tests/reference/grpo_rewards_reference.py
Writes tests/fixtures/grpo_rewards_cases.json (read by tests/grpo_rewards_test.ts).
"""
import json
import os
import re

COMPLETIONS = [
    "",
    "I add them</think> <answer>42</answer>",
    "\n5 + 3 = 8\n</think>\n<answer>\n8\n</answer>\n",
    "<think>\nstep\n</think>\n<answer>\n8\n</answer>\n",
    "<think>\nstep\n</think>\n<answer>\n8\n</answer>\nextra",
    "<think>a</think><answer>1</answer><answer>2</answer>",
    "<answer>7</answer><think>later</think>",
    "<think> </think> <answer>  $1,200 </answer>",
    "no tags at all 18",
    "x</think>\n<answer>multi\nline</answer>",
    "<think>\nline1\nline2\n</think>\n<answer>\n3\n</answer>\n",
    "\n<think>\nq\n</think>\n<answer>\n3\n</answer>\n",
]


def extract_tags(text):
    think = re.search(r"<think>(.*?)</think>", text, re.DOTALL)
    answer = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    return (think.group(1).strip() if think else "", answer.group(1).strip() if answer else "")


def formatting(completion, pos=1.0, neg=0.0, think_tag="think", answer_tag="answer"):
    think_pattern = rf"<{think_tag}>.*?</{think_tag}>"
    answer_pattern = rf"<{answer_tag}>.*?</{answer_tag}>"
    strict_pattern = (rf"^<{think_tag}>\n.*?\n</{think_tag}>\n<{answer_tag}>\n.*?\n"
                      rf"</{answer_tag}>\n$")
    strict = pos if re.match(strict_pattern, completion, re.DOTALL | re.MULTILINE) else neg
    thinks = re.findall(think_pattern, completion, re.DOTALL)
    answers = re.findall(answer_pattern, completion, re.DOTALL)
    soft = neg
    if len(thinks) == 1 and len(answers) == 1:
        if completion.find(thinks[0]) < completion.find(answers[0]):
            soft = pos
    total = soft + strict
    return total, 1.0 if total >= pos else 0.0


cases = []
for c in COMPLETIONS:
    cot, ans = extract_tags("<think>" + c)
    fr, fs = formatting(c)
    cases.append({"completion": c, "cot": cot, "answer": ans, "format_reward": fr,
                  "format_success": fs, "think_reward": 1.0 if cot else 0.0})
out = os.path.join(os.path.dirname(__file__), "..", "fixtures", "grpo_rewards_cases.json")
with open(out, "w") as f:
    json.dump(cases, f, indent=1)
    f.write("\n")
print(f"{len(cases)} cases")
