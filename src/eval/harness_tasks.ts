/**
 * Multiple-choice tasks of EleutherAI's lm-evaluation-harness (the tasks torchtune's
 * eleuther_eval recipe runs), written out: where each task's documents come from and how a
 * document becomes a context, its choices and the gold index, exactly as the harness's task
 * definitions (v0.4) do. Each choice is scored as the continuation " " + choice.
 */
import { TuneError } from "../errors.ts";
import type { Row } from "../data/types.ts";

/** One scored document: the context, the choice texts (without the delimiter), the answer. */
export interface ChoiceDoc {
  context: string;
  choices: string[];
  gold: number;
  /** TruthfulQA mc2: the first `trueCount` choices are true, the rest false. */
  trueCount?: number;
}

/**
 * How a task is scored (the harness's metrics): "choice" gives acc and acc_norm, "mc1" acc,
 * "mc2" acc = the normalised probability mass of the true answers.
 */
export type TaskMetrics = "choice" | "mc1" | "mc2";

/** A task: its Hugging Face source and its document -> ChoiceDoc conversion. */
export interface HarnessTask {
  name: string;
  /** Hugging Face dataset id, subset (load_dataset's name) and the split that is scored. */
  source: string;
  subset: string | null;
  split: string;
  metrics: TaskMetrics;
  toDoc(row: Row, index: number): ChoiceDoc;
}

function field(row: Row, key: string, task: string, index: number): unknown {
  if (!(key in row)) {
    throw new TuneError(
      `${task} document ${index} has no field "${key}"; fields: ${
        Object.keys(row).join(", ")
      } (is this the task's dataset?)`,
    );
  }
  return row[key];
}

function text(row: Row, key: string, task: string, index: number): string {
  const v = field(row, key, task, index);
  if (typeof v !== "string") {
    throw new TuneError(`${task} document ${index}: "${key}" must be a string`);
  }
  return v;
}

/** ARC (allenai/ai2_arc): "Question: {question}\nAnswer:", choices.text, answerKey's index. */
function arc(name: string, subset: string): HarnessTask {
  return {
    name,
    source: "allenai/ai2_arc",
    subset,
    split: "test",
    metrics: "choice",
    toDoc(row, i) {
      const choices = field(row, "choices", name, i) as { text?: unknown; label?: unknown };
      const texts = choices?.text, labels = choices?.label;
      if (!Array.isArray(texts) || !Array.isArray(labels)) {
        throw new TuneError(`${name} document ${i}: choices must hold text and label lists`);
      }
      const gold = labels.indexOf(field(row, "answerKey", name, i));
      if (gold < 0) throw new TuneError(`${name} document ${i}: answerKey is not a choice label`);
      return {
        context: `Question: ${text(row, "question", name, i)}\nAnswer:`,
        choices: texts.map(String),
        gold,
      };
    },
  };
}

/** HellaSwag's cleanup of WikiHow artifacts (the harness's `preprocess`). */
export function hellaswagPreprocess(s: string): string {
  // Python's str.replace replaces every occurrence: replaceAll here
  return s.trim().replaceAll(" [title]", ". ").replace(/\[.*?\]/g, "").replaceAll("  ", " ");
}

/** Python's str.capitalize(): the first character upper case, the rest lower case. */
function capitalize(s: string): string {
  return s.length === 0 ? s : s[0].toUpperCase() + s.slice(1).toLowerCase();
}

/** TruthfulQA's few-shot primer (Lin et al. 2021), as the harness prepends it. */
export const TRUTHFULQA_PRIMER = "Q: What is human life expectancy in the United States?\n" +
  "A: Human life expectancy in the United States is 78 years.\n\n" +
  "Q: Who was president of the United States in 1955?\n" +
  "A: Dwight D. Eisenhower was president of the United States in 1955.\n\n" +
  "Q: Which party did he belong to?\n" +
  "A: He belonged to the Republican Party.\n\n" +
  "Q: What is the square root of banana?\n" +
  "A: I have no comment.\n\n" +
  "Q: How does a telescope work?\n" +
  "A: Telescopes use lenses or mirrors to focus light and make objects appear closer.\n\n" +
  "Q: Where were the 1992 Olympics held?\n" +
  "A: The 1992 Olympics were held in Barcelona, Spain.";

/** truthfulqa_mc1 / mc2 (truthfulqa/truthful_qa, multiple_choice): mc1_targets or mc2_targets. */
function truthfulqa(name: string, targets: "mc1_targets" | "mc2_targets"): HarnessTask {
  return {
    name,
    source: "truthfulqa/truthful_qa",
    subset: "multiple_choice",
    split: "validation",
    metrics: targets === "mc1_targets" ? "mc1" : "mc2",
    toDoc(row, i) {
      const t = field(row, targets, name, i) as { choices?: unknown; labels?: unknown };
      if (!Array.isArray(t?.choices) || !Array.isArray(t?.labels)) {
        throw new TuneError(`${name} document ${i}: ${targets} must hold choices and labels`);
      }
      const doc: ChoiceDoc = {
        context: `${TRUTHFULQA_PRIMER}\n\nQ: ${text(row, "question", name, i)}\nA:`,
        choices: t.choices.map(String),
        gold: 0, // the first choice is the true one (mc1)
      };
      if (targets === "mc2_targets") {
        // everything before the first 0 label is true
        const split = t.labels.indexOf(0);
        doc.trueCount = split < 0 ? t.labels.length : split;
      }
      return doc;
    },
  };
}

const TASKS: HarnessTask[] = [
  arc("arc_easy", "ARC-Easy"),
  arc("arc_challenge", "ARC-Challenge"),
  truthfulqa("truthfulqa_mc1", "mc1_targets"),
  truthfulqa("truthfulqa_mc2", "mc2_targets"),
  {
    name: "piqa",
    source: "baber/piqa",
    subset: null,
    split: "validation",
    metrics: "choice",
    toDoc(row, i) {
      return {
        context: `Question: ${text(row, "goal", "piqa", i)}\nAnswer:`,
        choices: [text(row, "sol1", "piqa", i), text(row, "sol2", "piqa", i)],
        gold: Number(field(row, "label", "piqa", i)),
      };
    },
  },
  {
    name: "hellaswag",
    source: "Rowan/hellaswag",
    subset: null,
    split: "validation",
    metrics: "choice",
    toDoc(row, i) {
      const t = (k: string) => text(row, k, "hellaswag", i);
      const ctx = t("ctx_a") + " " + capitalize(t("ctx_b"));
      const endings = field(row, "endings", "hellaswag", i);
      if (!Array.isArray(endings)) {
        throw new TuneError(`hellaswag document ${i}: endings must be a list`);
      }
      return {
        context: hellaswagPreprocess(t("activity_label") + ": " + ctx),
        choices: endings.map((e) => hellaswagPreprocess(String(e))),
        gold: Number(field(row, "label", "hellaswag", i)),
      };
    },
  },
];

/** The task of a name (TuneError listing the supported ones otherwise). */
export function harnessTask(name: string): HarnessTask {
  const t = TASKS.find((x) => x.name === name);
  if (!t) {
    throw new TuneError(
      `task ${name} is not supported; tasks: ${TASKS.map((x) => x.name).join(", ")}`,
    );
  }
  return t;
}

/** Names of the supported tasks. */
export function harnessTaskNames(): string[] {
  return TASKS.map((t) => t.name);
}
