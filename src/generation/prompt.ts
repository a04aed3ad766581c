/**
 * The prompt of a generation run as token ids: raw text (BOS + text), text in an instruction
 * template (Alpaca), or messages in a chat format, tokenized exactly as the data pipeline
 * tokenizes training samples (src/data/chat_format.ts) so a fine-tuned model sees the
 * prompt it was trained on.
 */
import { alpacaPrompt } from "../data/messages.ts";
import { resolveChatFormat, tokenizeMessages } from "../data/chat_format.ts";
import type { Message } from "../data/types.ts";
import { TuneError } from "../errors.ts";
import type { Tokenizer } from "../tokenizers/types.ts";

/** What a config may give as `prompt`. */
export type PromptValue = string | Record<string, unknown>;

/** How the prompt is wrapped. */
export interface PromptOptions {
  /** "alpaca" (or torchtune.data.AlpacaInstructTemplate), or null for none. */
  instructTemplate: string | null;
  /** A chat format name (none, plain, llama2, llama3, chatml, auto, torchtune names) or null. */
  chatFormat: string | null;
}

const ALPACA_NAMES = new Set([
  "alpaca",
  "torchtune.data.AlpacaInstructTemplate",
  "torchtune.data.AlpacaToMessages",
]);

function msg(role: Message["role"], content: string): Message {
  return { role, content: [content], masked: true, eot: true };
}

function field(p: Record<string, unknown>, key: string): string | null {
  const v = p[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== "string") {
    throw new TuneError(`prompt.${key} must be a string, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Token ids of the prompt (BOS first when the tokenizer has one), ready for prefill. */
export function promptTokens(
  tokenizer: Tokenizer,
  prompt: PromptValue,
  o: PromptOptions,
): number[] {
  if (prompt === null || prompt === undefined) {
    throw new TuneError(`prompt is missing; set prompt="..." (an empty string starts from BOS)`);
  }
  const mapping = typeof prompt === "object" ? prompt : null;
  if (mapping) {
    const known = ["system", "user", "instruction", "input"];
    const extra = Object.keys(mapping).filter((k) => !known.includes(k));
    if (extra.length > 0) {
      throw new TuneError(
        `prompt has unknown key ${
          extra[0]
        }; use {system, user} with chat_format or {instruction, input} with instruct_template`,
      );
    }
  }
  let userText: string;
  let system: string | null = null;
  if (o.instructTemplate !== null) {
    if (!ALPACA_NAMES.has(o.instructTemplate)) {
      throw new TuneError(
        `unknown instruct_template ${o.instructTemplate}; use alpaca (torchtune.data.AlpacaInstructTemplate) or null`,
      );
    }
    const instruction = mapping
      ? field(mapping, "instruction") ?? field(mapping, "user") ?? ""
      : String(prompt);
    const input = mapping ? field(mapping, "input") : null;
    userText = alpacaPrompt(instruction, input);
  } else if (mapping) {
    if (o.chatFormat === null) {
      throw new TuneError(
        `prompt is a mapping ({system, user}); set chat_format (e.g. llama3, llama2, chatml, plain) or give prompt as text`,
      );
    }
    system = field(mapping, "system");
    userText = field(mapping, "user") ?? "";
  } else {
    userText = String(prompt);
  }

  if (o.chatFormat === null) {
    if (o.instructTemplate === null) {
      return tokenizer.encode(userText, { bos: tokenizer.bosId >= 0, eos: false });
    }
    // an instruct template alone: the data pipeline's "none" format (BOS + prompt)
    return tokenizeMessages(tokenizer, [msg("user", userText)], "none", { addEnd: false })
      .tokens;
  }
  const format = resolveChatFormat(o.chatFormat, tokenizer, "plain");
  const messages: Message[] = [];
  if (system !== null) messages.push(msg("system", system));
  messages.push(msg("user", userText));
  // chat formats open the assistant's turn (e.g. Llama 3's header) for the model to fill
  if (format !== "none") messages.push({ ...msg("assistant", ""), eot: false });
  return tokenizeMessages(tokenizer, messages, format, { addEnd: false }).tokens;
}
