/**
 * torchtune's prompt templates (torchtune.data.PromptTemplate and the built-in ones), set as
 * `tokenizer.prompt_template`: a dotted name, or a mapping `{role: [prepend, append]}` for a
 * custom template. Tag templates add text pieces around each message of a role before the
 * chat format tokenizes it (user tags are masked with the user message, assistant tags are
 * trained on); Llama2ChatTemplate and ChatMLTemplate are whole chat formats.
 */
import { didYouMean } from "../config/suggest.ts";
import { TuneError } from "../errors.ts";
import type { PromptTemplate } from "../tokenizers/types.ts";

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
  "torchtune.data.ChatMLTemplate": { chatFormat: "chatml" },
};

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
