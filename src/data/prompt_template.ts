/**
 * torchtune's prompt templates (torchtune.data.PromptTemplate and the built-in ones), set as
 * `tokenizer.prompt_template`: a dotted name, or a mapping `{role: [prepend, append]}` for a
 * custom template. Tag templates add text pieces around each message of a role before the
 * chat format tokenizes it (user tags are masked with the user message, assistant tags are
 * trained on). ChatMLTemplate and MistralChatTemplate are tag templates as in torchtune: plain
 * text, usable with any tokenizer. Llama2ChatTemplate is run as a whole chat format.
 */
import { didYouMean } from "../config/suggest.ts";
import { TuneError } from "../errors.ts";
import type { PromptTemplate } from "../tokenizers/types.ts";
import type { Message } from "./types.ts";

const ROLES = ["system", "user", "assistant", "ipython", "tool"];

/** The built-in templates by every name torchtune gives them. */
const BUILT_IN: Record<string, Omit<PromptTemplate, "name">> = {
  "torchtune.data.GrammarErrorCorrectionTemplate": {
    tags: { user: ["Correct this to standard English: ", "\n---\nCorrected: "] },
  },
  "torchtune.data.SummarizeTemplate": {
    tags: { user: ["Summarize this dialogue:\n", "\n---\nSummary:\n"] },
  },
  "torchtune.data.QuestionAnswerTemplate": {
    tags: { user: ["Question: ", "\n\nAnswer: "] },
  },
  "torchtune.models.llama2.Llama2ChatTemplate": { chatFormat: "llama2" },
  "torchtune.data.Llama2ChatTemplate": { chatFormat: "llama2" },
  "torchtune.data.ChatMLTemplate": {
    tags: {
      system: ["<|im_start|>system\n", "<|im_end|>\n"],
      user: ["<|im_start|>user\n", "<|im_end|>\n"],
      assistant: ["<|im_start|>assistant\n", "<|im_end|>\n"],
      ipython: ["", ""],
    },
    openEmptyLastAssistant: true,
  },
  "torchtune.models.mistral.MistralChatTemplate": {
    tags: { user: ["[INST] ", " [/INST] "], assistant: ["", ""], ipython: ["", ""] },
    refuseRoles: ["system"],
  },
};

/** A built-in template by its torchtune name (e.g. "torchtune.data.ChatMLTemplate"). */
export function builtInTemplate(name: string): PromptTemplate {
  const found = BUILT_IN[name];
  if (!found) throw new TuneError(`unknown prompt template ${name}`);
  return { name, ...found };
}

/**
 * Apply a tag template (torchtune's PromptTemplate.__call__): each message of a tagged role
 * gets the prepend tag as a first content piece and the append tag as a last one; roles
 * without tags are left as they are. A refused role is a TuneError.
 */
export function applyPromptTemplate(
  messages: readonly Message[],
  template: PromptTemplate,
): Message[] {
  const tags = template.tags ?? {};
  return messages.map((m, i) => {
    if (template.refuseRoles?.includes(m.role)) {
      throw new TuneError(
        `prompt template ${template.name} has no ${m.role} messages; drop them (e.g. unset new_system_prompt) or use another template`,
      );
    }
    const pair = tags[m.role];
    if (!pair) return m;
    const content = [...m.content];
    const openLast = template.openEmptyLastAssistant && m.role === "assistant" &&
      i === messages.length - 1 && content.join("") === "";
    if (pair[0]) content.unshift(pair[0]);
    if (pair[1] && !openLast) content.push(pair[1]);
    return { ...m, content };
  });
}

/** Parse a `prompt_template` config value; null/undefined: none. */
export function parsePromptTemplate(value: unknown, key: string): PromptTemplate | null {
  if (value === null || value === undefined) return null;
  if (typeof value === "string") {
    const found = BUILT_IN[value];
    if (!found) {
      throw new TuneError(
        `unknown ${key} '${value}'${
          didYouMean(value, Object.keys(BUILT_IN))
        }; or give a mapping {role: [prepend, append]}`,
      );
    }
    return { name: value, ...found };
  }
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new TuneError(
      `${key} must be a template name or a mapping {role: [prepend, append]}, got ${
        JSON.stringify(value)
      }`,
    );
  }
  const tags: Record<string, readonly [string, string]> = {};
  for (const [role, pair] of Object.entries(value as Record<string, unknown>)) {
    if (!ROLES.includes(role)) {
      throw new TuneError(`${key}.${role}: unknown role; use ${ROLES.join(", ")}`);
    }
    if (
      !Array.isArray(pair) || pair.length !== 2 || pair.some((t) => typeof t !== "string")
    ) {
      throw new TuneError(
        `${key}.${role} must be [prepend, append] (two strings), got ${JSON.stringify(pair)}`,
      );
    }
    tags[role] = [pair[0], pair[1]];
  }
  return { name: "custom", tags };
}
