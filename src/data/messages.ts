/**
 * Row -> messages transforms (torchtune's AlpacaToMessages, InputOutputToMessages,
 * ShareGPTToMessages, OpenAIToMessages), masking and validation.
 */
import { TuneError } from "../errors.ts";
import type { MaskingStrategy, Message, Role, Row } from "./types.ts";

/** Where a row came from, for error messages. */
export interface RowContext {
  /** File path(s) or Hugging Face repo id. */
  source: string;
  /** Index of the row in the loaded split. */
  index: number;
}

/** The exact Alpaca prompt (Stanford Alpaca / torchtune), with and without `input`. */
export const ALPACA_PROMPT_INPUT =
  "Below is an instruction that describes a task, paired with an input that provides further context. " +
  "Write a response that appropriately completes the request.\n\n" +
  "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n";

/** The Alpaca prompt for rows whose `input` is empty or absent. */
export const ALPACA_PROMPT_NO_INPUT = "Below is an instruction that describes a task. " +
  "Write a response that appropriately completes the request.\n\n" +
  "### Instruction:\n{instruction}\n\n### Response:\n";

/** Fill the Alpaca prompt (no response) for an instruction and optional input. */
export function alpacaPrompt(instruction: string, input?: string | null): string {
  // Replace with functions so `$` in the text is never read as a replacement pattern.
  if (input) {
    return ALPACA_PROMPT_INPUT.replace("{instruction}", () => instruction).replace(
      "{input}",
      () => input,
    );
  }
  return ALPACA_PROMPT_NO_INPUT.replace("{instruction}", () => instruction);
}

/** Build a text message. */
export function textMessage(
  role: Role,
  text: string,
  options: { masked?: boolean; eot?: boolean; ipython?: boolean } = {},
): Message {
  return {
    role,
    content: [text],
    masked: options.masked ?? false,
    eot: options.eot ?? true,
    ipython: options.ipython ?? false,
  };
}

function describeRow(ctx: RowContext): string {
  return `dataset row ${ctx.index} of ${ctx.source}`;
}

/**
 * The value of column `column` of a row; a missing column is a one-line TuneError naming it,
 * listing the available columns and the config key (e.g. "column_map.output") that maps it.
 */
export function getColumn(row: Row, column: string, ctx: RowContext, configKey?: string): unknown {
  if (!(column in row)) {
    const cols = Object.keys(row).join(", ") || "(none)";
    const fix = configKey ? `; set dataset.${configKey} to one of them` : "";
    throw new TuneError(
      `${describeRow(ctx)} has no column "${column}"; available columns: ${cols}${fix}`,
    );
  }
  return row[column];
}

function getString(row: Row, column: string, ctx: RowContext, mapKey: string): string {
  const v = getColumn(row, column, ctx, `column_map.${mapKey}`);
  if (typeof v !== "string") {
    throw new TuneError(
      `${describeRow(ctx)}: column "${column}" must be a string, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

/** Set each message's `masked` flag by strategy; system messages are always masked (torchtune). */
export function maskMessages(messages: Message[], strategy: MaskingStrategy): void {
  let markedLast = false;
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (m.role === "system") {
      m.masked = true;
    } else if (strategy === "train_on_last") {
      m.masked = !(m.role === "assistant" && !markedLast);
      if (m.role === "assistant") markedLast = true;
    } else if (strategy === "train_on_all") {
      m.masked = false;
    } else {
      m.masked = m.role !== "assistant";
    }
  }
}

/** torchtune's mapping of the `train_on_input` flag to a masking strategy. */
export function strategyOf(trainOnInput: boolean): MaskingStrategy {
  return trainOnInput ? "train_on_all" : "train_on_assistant";
}

/** Column names of the Alpaca transform. */
export interface AlpacaColumns {
  instruction: string;
  input: string;
  output: string;
}

/** Alpaca row -> [user(prompt), assistant(output)] (torchtune's AlpacaToMessages). */
export function alpacaToMessages(
  row: Row,
  ctx: RowContext,
  options: { columns?: Partial<AlpacaColumns>; trainOnInput: boolean },
): Message[] {
  const cols = { instruction: "instruction", input: "input", output: "output", ...options.columns };
  const instruction = getString(row, cols.instruction, ctx, "instruction");
  const rawInput = row[cols.input];
  if (rawInput !== undefined && rawInput !== null && typeof rawInput !== "string") {
    throw new TuneError(`${describeRow(ctx)}: column "${cols.input}" must be a string`);
  }
  const prompt = alpacaPrompt(instruction, rawInput as string | null | undefined);
  const messages = [
    textMessage("user", prompt),
    textMessage("assistant", getString(row, cols.output, ctx, "output")),
  ];
  maskMessages(messages, strategyOf(options.trainOnInput));
  return messages;
}

/** input/output row -> [system?, user, assistant] (torchtune's InputOutputToMessages). */
export function inputOutputToMessages(
  row: Row,
  ctx: RowContext,
  options: {
    columns?: Partial<{ input: string; output: string }>;
    trainOnInput: boolean;
    newSystemPrompt?: string | null;
  },
): Message[] {
  const cols = { input: "input", output: "output", ...options.columns };
  const messages = [
    textMessage("user", getString(row, cols.input, ctx, "input")),
    textMessage("assistant", getString(row, cols.output, ctx, "output")),
  ];
  if (options.newSystemPrompt != null) {
    messages.unshift(textMessage("system", options.newSystemPrompt, { masked: true }));
  }
  maskMessages(messages, strategyOf(options.trainOnInput));
  return messages;
}

const SHAREGPT_ROLES: Record<string, Role> = { system: "system", human: "user", gpt: "assistant" };

function getList(row: Row, column: string, ctx: RowContext): unknown[] {
  const v = getColumn(row, column, ctx, "conversation_column");
  if (!Array.isArray(v)) {
    throw new TuneError(
      `${
        describeRow(ctx)
      }: column "${column}" must be a list of messages; set dataset.conversation_column`,
    );
  }
  return v;
}

/** Options of the conversation transforms (ShareGPT, OpenAI). */
interface ConversationOptions {
  /** The conversation column (default: the style's). */
  column?: string;
  trainOnInput: boolean;
  /** A system prompt put first (masked) in place of the row's own system messages. */
  newSystemPrompt?: string | null;
}

/**
 * The messages of a conversation column: `newSystemPrompt` first, then each list item `k`
 * through `toMessage` (null: dropped), masked as `trainOnInput` says.
 */
function conversationToMessages(
  row: Row,
  ctx: RowContext,
  options: ConversationOptions,
  defaultColumn: string,
  toMessage: (item: Row, k: number, list: unknown[]) => Message | null,
): Message[] {
  const messages: Message[] = [];
  if (options.newSystemPrompt != null) {
    messages.push(textMessage("system", options.newSystemPrompt, { masked: true }));
  }
  const list = getList(row, options.column ?? defaultColumn, ctx);
  list.forEach((item, k) => {
    const m = toMessage((item ?? {}) as Row, k, list);
    if (m !== null) messages.push(m);
  });
  maskMessages(messages, strategyOf(options.trainOnInput));
  return messages;
}

/** ShareGPT row (`conversations: [{from, value}]`) -> messages (torchtune's ShareGPTToMessages). */
export function shareGptToMessages(
  row: Row,
  ctx: RowContext,
  options: ConversationOptions,
): Message[] {
  return conversationToMessages(row, ctx, options, "conversations", (turn, k) => {
    const from = turn.from;
    const role = typeof from === "string" ? SHAREGPT_ROLES[from] : undefined;
    if (role === undefined) {
      throw new TuneError(
        `${describeRow(ctx)} message ${k}: ShareGPT "from" must be system, human or gpt, got ${
          JSON.stringify(from)
        }; for role/content messages use dataset.conversation_style=openai`,
      );
    }
    if (typeof turn.value !== "string") {
      throw new TuneError(`${describeRow(ctx)} message ${k}: ShareGPT "value" must be a string`);
    }
    if (role === "system" && options.newSystemPrompt != null) return null;
    return textMessage(role, turn.value);
  });
}

/** Python's json.dumps with its default separators (", " and ": "), as chat templates' tojson. */
export function pyJson(v: unknown): string {
  if (v === null || typeof v !== "object") return JSON.stringify(v) ?? "null";
  if (Array.isArray(v)) return `[${v.map(pyJson).join(", ")}]`;
  return `{${
    Object.entries(v as Record<string, unknown>).map(([k, x]) =>
      `${JSON.stringify(k)}: ${pyJson(x)}`
    )
      .join(", ")
  }}`;
}

/**
 * OpenAI `tool_calls` of an assistant message as JSON lines `{"name": ..., "arguments": ...}`
 * (Qwen's and Hermes' tool-call text; arguments given as a JSON string are parsed), or null
 * when the message calls no tool.
 */
function toolCallText(v: unknown, ctx: RowContext, k: number): string | null {
  if (v === undefined || v === null || (Array.isArray(v) && v.length === 0)) return null;
  if (!Array.isArray(v)) {
    throw new TuneError(`${describeRow(ctx)} message ${k}: "tool_calls" must be a list`);
  }
  return v.map((c) => {
    const f = ((c ?? {}) as Row).function as Row | undefined ?? (c as Row);
    if (typeof f?.name !== "string") {
      throw new TuneError(
        `${describeRow(ctx)} message ${k}: each tool call needs function.name (OpenAI format)`,
      );
    }
    let args = f.arguments ?? {};
    if (typeof args === "string") {
      try {
        args = JSON.parse(args);
      } catch {
        // not JSON: kept as the string it is
      }
    }
    return `{"name": ${JSON.stringify(f.name)}, "arguments": ${pyJson(args)}}`;
  }).join("\n");
}

const OPENAI_ROLES = new Set(["system", "user", "assistant", "tool", "ipython"]);

/** OpenAI row (`messages: [{role, content}]`) -> messages (torchtune's OpenAIToMessages, text only). */
export function openAiToMessages(
  row: Row,
  ctx: RowContext,
  options: ConversationOptions,
): Message[] {
  return conversationToMessages(row, ctx, options, "messages", (msg, k, list) => {
    const role = msg.role;
    if (typeof role !== "string" || !OPENAI_ROLES.has(role)) {
      throw new TuneError(
        `${describeRow(ctx)} message ${k}: role must be system, user, assistant or tool, got ${
          JSON.stringify(role)
        }; for from/value messages use dataset.conversation_style=sharegpt`,
      );
    }
    if (role === "system" && options.newSystemPrompt != null) return null;
    const calls = role === "assistant" ? toolCallText(msg.tool_calls, ctx, k) : null;
    let text: string;
    if (
      calls !== null && (msg.content === null || msg.content === undefined || msg.content === "")
    ) {
      text = "";
    } else if (typeof msg.content === "string") text = msg.content;
    else if (Array.isArray(msg.content)) {
      text = msg.content.map((part) => {
        const p = (part ?? {}) as Row;
        if (p.type !== "text" || typeof p.text !== "string") {
          throw new TuneError(
            `${describeRow(ctx)} message ${k}: only text content parts are supported, got type ${
              JSON.stringify(p.type)
            }`,
          );
        }
        return p.text;
      }).join("");
    } else {
      throw new TuneError(`${describeRow(ctx)} message ${k}: "content" must be a string or list`);
    }
    // Tool results and assistant messages followed by a tool result do not end the turn.
    const next = list[k + 1] as Row | undefined;
    const eot = !(role === "tool" || role === "ipython" ||
      (role === "assistant" && next != null && (next.role === "tool" || next.role === "ipython")));
    if (calls !== null) {
      // a tool call (torchtune's Message ipython=True): its JSON lines are the message text
      text = text === "" ? calls : `${text}\n${calls}`;
      return textMessage("assistant", text, { eot, ipython: true });
    }
    return textMessage(role as Role, text, { eot });
  });
}

/**
 * Check a conversation is well formed, with torchtune's checks (validate_messages and
 * Message's own): at least two messages; a system message only first; no two user messages
 * in a row; an assistant message only after a user or tool message; a tool (tool/ipython)
 * message only after a tool call (an assistant message with `ipython`); `ipython` only on
 * assistant messages.
 */
export function validateMessages(messages: readonly Message[], ctx: RowContext): void {
  const bad = (why: string) => new TuneError(`${describeRow(ctx)}: ${why}`);
  if (messages.length < 2) {
    throw bad(`a conversation needs at least 2 messages, got ${messages.length}`);
  }
  let last: Message = { role: "assistant", content: [], masked: false, eot: true };
  messages.forEach((m, i) => {
    if (m.ipython && m.role !== "assistant") {
      throw bad(
        `message ${i} (${m.role}) is marked as a tool call; only assistant messages call tools`,
      );
    }
    if (
      m.role === "assistant" &&
      !(last.role === "user" || last.role === "tool" || last.role === "ipython")
    ) {
      throw bad(`assistant message ${i} does not follow a user or tool message`);
    }
    if (m.role === "user" && last.role === "user") throw bad(`two user messages in a row at ${i}`);
    if (m.role === "system" && i > 0) throw bad(`system message at ${i}, not first`);
    if ((m.role === "tool" || m.role === "ipython") && !last.ipython) {
      throw bad(
        `tool message ${i} does not follow a tool call; a tool result must come right after the assistant message that called the tool (OpenAI data: its tool_calls)`,
      );
    }
    last = m;
  });
}
