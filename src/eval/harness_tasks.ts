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
}

/** A task: its Hugging Face source and its document -> ChoiceDoc conversion. */
export interface HarnessTask {
  name: string;
  /** Hugging Face dataset id, subset (load_dataset's name) and the split that is scored. */
  source: string;
  subset: string | null;
  split: string;
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

const TASKS: HarnessTask[] = [
  arc("arc_easy", "ARC-Easy"),
  arc("arc_challenge", "ARC-Challenge"),
  {
    name: "piqa",
    source: "baber/piqa",
    subset: null,
    split: "validation",
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
