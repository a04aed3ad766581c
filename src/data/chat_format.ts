/**
 * Messages -> (tokens, mask): the chat formats, each reproducing the torchtune tokenizer
 * that uses it.
 *
 * - "none": torchtune's `tokenize_messages_no_special_tokens` with no prompt template
 *   (Llama2Tokenizer's default): contents concatenated, BOS at the start of each turn, EOS
 *   after each assistant message. Used for Alpaca/instruct data with SentencePiece models.
 * - "llama2": Llama2ChatTemplate (`[INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST] `) on the
 *   same path. The system prompt goes into the first [INST] only, as in Meta's reference
 *   code and Hugging Face's template (torchtune's template repeats it in every [INST]).
 * - "plain": a "role: content" template on the same path: `system: S\n`, `user: U\nassistant: `,
 *   then the assistant text (tune's own; chat datasets fall back to "none", as torchtune).
 * - "chatml_template" / "mistral": torchtune's ChatMLTemplate / MistralChatTemplate as text tags
 *   on the same path (any tokenizer; src/data/prompt_template.ts).
 * - "llama3": Llama3Tokenizer.tokenize_messages: `<|begin_of_text|>` then per message
 *   `<|start_header_id|>role<|end_header_id|>\n\n` + stripped text + `<|eot_id|>` (or
 *   `<|eom_id|>` when the message does not end the turn), then `<|end_of_text|>`.
 * - "chatml": Qwen2/2.5/3's tokenize_messages: `<|im_start|>role\n` + text + `<|im_end|>\n`,
 *   except that the last assistant message is closed by the tokenizer's EOS (<|im_end|>)
 *   instead; tool calls and results as Qwen2.5 (see `tokenizeChatMl`). No BOS.
 * - "phi3": Phi3MiniTokenizer.tokenize_messages: BOS at the start of a turn, then per message
 *   `<|user|>` / `<|assistant|>` / `<|system|>`, encode("\n"), each content piece with trailing
 *   spaces stripped and SentencePiece's leading space trimmed, `<|end|>`, encode("\n"); with end
 *   tokens (training) EOS (<|endoftext|>) after each assistant message and a new turn (BOS)
 *   after it. Without end tokens (a generation prompt) a last assistant message is left open
 *   (`<|assistant|>\n` + its text, no `<|end|>`), as Phi-3's add_generation_prompt does;
 *   torchtune closes it, which would ask the model to continue after `<|end|>`.
 *
 * On the "none"/"llama2"/"plain" path, torchtune strips trailing spaces of a message's text
 * and trims the leading whitespace SentencePiece adds to a continuation message (by encoding
 * "\n" + text and dropping the tokens of "\n"). Both exist only to undo SentencePiece's
 * dummy prefix, so they are applied only when the tokenizer adds one (detected once per
 * tokenizer); other tokenizers encode the text as is.
 *
 * One deliberate difference from torchtune: a message's template pieces (`[INST] `, the
 * content, ` [/INST] `) are joined and encoded as one text. torchtune encodes each piece
 * separately, which with SentencePiece inserts a space at every piece start
 * ("<<SYS>>\n You are terse. \n<</SYS>>", "2+2?  [/INST]"); joined, the tokens decode to
 * exactly the template text of Meta's reference code. For "none" (one piece per message,
 * e.g. Alpaca) the ids are torchtune's.
 *
 * - "phi4": Phi4Tokenizer.tokenize_messages: no BOS; per message `<|im_start|>` + role +
 *   `<|im_sep|>` + each content piece with trailing spaces stripped + `<|im_end|>`, except that
 *   assistant messages get `<|im_end|>` only with end tokens (torchtune's add_end_tokens).
 *   tune trains with end tokens, so the model learns to close its turn as Phi-4's chat
 *   template does (torchtune's Phi4Tokenizer.__call__ passes add_end_tokens=False).
 *
 * - "hf": the checkpoint's own Jinja chat template (src/data/hf_chat.ts).
 *
 * Special tokens are looked up by `specialTokenId()`.
 */
import { TuneError } from "../errors.ts";
import type { PromptTemplate, Tokenizer } from "../tokenizers/types.ts";
import { tokenizeHfChat } from "./hf_chat.ts";
import { applyPromptTemplate, builtInTemplate } from "./prompt_template.ts";
import type { Message } from "./types.ts";

/** Chat format names. */
export type ChatFormat =
  | "none"
  | "plain"
  | "llama2"
  | "llama3"
  | "chatml"
  | "phi3"
  | "phi4"
  | "chatml_template"
  | "mistral"
  | "hf";

/** All chat_format values accepted in configs: our names, "auto" and torchtune class names. */
export const CHAT_FORMAT_CHOICES = [
  "auto",
  "none",
  "plain",
  "llama2",
  "llama3",
  "chatml",
  "phi3",
  "phi4",
  "chatml_template",
  "mistral",
  "hf",
  "torchtune.data.Llama2ChatFormat",
  "torchtune.models.llama2.Llama2ChatTemplate",
  "torchtune.data.ChatMLFormat",
  "torchtune.data.ChatMLTemplate",
  "torchtune.models.mistral.MistralChatTemplate",
] as const;

/** Result of tokenizing a conversation: ids and, per id, whether it is masked (no loss). */
export interface TokenizedMessages {
  tokens: number[];
  mask: boolean[];
}

/** Options of `tokenizeMessages`. */
export interface TokenizeMessagesOptions {
  /** Truncate to this many tokens, as torchtune's tokenizer max_seq_len does (null: never). */
  maxSeqLen?: number | null;
  /** Add end tokens (EOS, closing tags) after the last message; false for generation prompts. */
  addEnd?: boolean;
}

/**
 * Id of a special token (e.g. "<|eot_id|>"), or undefined when the tokenizer has none: from
 * the tokenizer's `specialTokens`, else when encoding the text with special-token parsing
 * gives exactly one id that decodes back to it.
 */
export function specialTokenId(tokenizer: Tokenizer, text: string): number | undefined {
  const id = tokenizer.specialTokens?.get(text);
  if (id !== undefined) return id;
  const ids = tokenizer.encode(text, { bos: false, eos: false, parseSpecial: true });
  if (ids.length === 1 && tokenizer.decode(ids, { skipSpecial: false }) === text) return ids[0];
  return undefined;
}

function requireSpecial(tokenizer: Tokenizer, text: string, format: string): number {
  const id = specialTokenId(tokenizer, text);
  if (id === undefined) {
    throw new TuneError(
      `chat_format ${format} needs the special token ${text}, which this tokenizer lacks; ` +
        `set dataset.chat_format to one your tokenizer supports (plain, llama2 or none)`,
    );
  }
  return id;
}

/**
 * The chat format a config value names. "auto" picks the tokenizer's Llama2ChatTemplate when
 * set, else llama3 when the tokenizer has <|start_header_id|>, phi4 when it has <|im_sep|>,
 * chatml when it has <|im_start|>,
 * phi3 when it has <|user|> and <|end|>, hf when the checkpoint ships a Jinja chat template
 * (tokenizer_config.json), else `fallback`. A tokenizer with `chat_template: hf` always
 * renders its own template.
 */
export function resolveChatFormat(
  name: string,
  tokenizer: Tokenizer,
  fallback: ChatFormat,
): ChatFormat {
  switch (name) {
    case "none":
    case "plain":
    case "llama2":
    case "llama3":
    case "chatml":
    case "phi3":
    case "phi4":
    case "chatml_template":
    case "mistral":
      return name;
    case "hf":
      if (!tokenizer.chatTemplate) {
        throw new TuneError(
          `chat_format hf needs the checkpoint's Jinja chat template, and this tokenizer has none; put the model's tokenizer_config.json (with chat_template) beside the tokenizer file, or set tokenizer.chat_template to it`,
        );
      }
      return "hf";
    case "torchtune.models.mistral.MistralChatTemplate":
      return "mistral";
    case "torchtune.data.Llama2ChatFormat":
    case "torchtune.models.llama2.Llama2ChatTemplate":
      return "llama2";
    case "torchtune.data.ChatMLFormat":
      return "chatml";
    case "torchtune.data.ChatMLTemplate":
      return "chatml_template";
    case "auto":
      if (tokenizer.chatTemplate?.force) return "hf";
      if (tokenizer.promptTemplate?.chatFormat) return tokenizer.promptTemplate.chatFormat;
      if (specialTokenId(tokenizer, "<|start_header_id|>") !== undefined) return "llama3";
      if (specialTokenId(tokenizer, "<|im_sep|>") !== undefined) return "phi4";
      if (specialTokenId(tokenizer, "<|im_start|>") !== undefined) return "chatml";
      if (
        specialTokenId(tokenizer, "<|user|>") !== undefined &&
        specialTokenId(tokenizer, "<|end|>") !== undefined
      ) return "phi3";
      if (tokenizer.chatTemplate) return "hf";
      return fallback;
  }
  throw new TuneError(
    `unknown dataset.chat_format ${JSON.stringify(name)}; use one of ${
      CHAT_FORMAT_CHOICES.join(", ")
    }`,
  );
}

/** torchtune's `truncate` (right): keep `max` items, then force the last one to `end`. */
export function truncate<T>(items: T[], max: number, end?: T): T[] {
  const out = items.slice(0, max);
  if (end !== undefined && out.length > 0 && out[out.length - 1] !== end) {
    out[out.length - 1] = end;
  }
  return out;
}

/**
 * `out` truncated to `max` tokens; with an `eosId`, the last kept token is forced to it and
 * left unmasked (the special-token formats' end of sequence).
 */
function truncateToEnd(
  out: TokenizedMessages,
  max: number,
  eosId: number | undefined,
): TokenizedMessages {
  return {
    tokens: truncate(out.tokens, max, eosId),
    mask: truncate(out.mask, max, eosId !== undefined ? true : undefined),
  };
}

/** Append `ids` to `out`, each with the mask flag `masked`. */
function pushIds(out: TokenizedMessages, ids: readonly number[], masked: boolean): void {
  for (const id of ids) {
    out.tokens.push(id);
    out.mask.push(masked);
  }
}

// ---- the SentencePiece-style path (none, llama2, plain) ----

const dummyPrefixCache = new WeakMap<Tokenizer, boolean>();

/** True when the tokenizer prepends a space-like token to every encoded text (SentencePiece). */
export function addsDummyPrefix(tokenizer: Tokenizer): boolean {
  let v = dummyPrefixCache.get(tokenizer);
  if (v === undefined) {
    const opts = { bos: false, eos: false };
    const prefix = tokenizer.encode("\n", opts);
    const full = tokenizer.encode("\na", opts);
    const alone = tokenizer.encode("a", opts);
    v = !sameIds(full.slice(prefix.length), alone);
    dummyPrefixCache.set(tokenizer, v);
  }
  return v;
}

function sameIds(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Encode a continuation piece without SentencePiece's leading space (torchtune's trim). */
function encodeTrimmed(tokenizer: Tokenizer, text: string): number[] {
  const opts = { bos: false, eos: false };
  const prefix = tokenizer.encode("\n", opts);
  const full = tokenizer.encode("\n" + text, opts);
  if (!sameIds(full.slice(0, prefix.length), prefix)) return tokenizer.encode(text, opts);
  return full.slice(prefix.length);
}

/** Llama2ChatTemplate: the system prompt goes inside the next user message's [INST]. */
function llama2Template(messages: readonly Message[]): Message[] {
  let system: string[] = [];
  const out: Message[] = [];
  for (const m of messages) {
    if (m.role === "system") {
      system = ["<<SYS>>\n", ...m.content, "\n<</SYS>>\n\n"];
      continue;
    }
    if (m.role === "user") {
      out.push({ ...m, content: ["[INST] ", ...system, ...m.content, " [/INST] "] });
      system = []; // Meta's format: the system prompt goes in the first [INST] only
    } else out.push(m);
  }
  return out;
}

const PLAIN_TEMPLATE: PromptTemplate = {
  name: "plain",
  tags: {
    system: ["system: ", "\n"],
    user: ["user: ", "\nassistant: "],
    tool: ["tool: ", "\nassistant: "],
    ipython: ["tool: ", "\nassistant: "],
  },
};

function tokenizeNoSpecial(
  tokenizer: Tokenizer,
  messages: readonly Message[],
  opts: { bosId: number | null; eosId: number | null; maxSeqLen: number | null },
): TokenizedMessages {
  const spm = addsDummyPrefix(tokenizer);
  const tokens: number[] = [];
  const mask: boolean[] = [];
  let startOfTurn = true;
  let prevEndsWithSpace = false;
  let lastMasked = false;
  for (const message of messages) {
    lastMasked = message.masked;
    const endOfTurn = message.role === "assistant";
    if (startOfTurn && opts.bosId !== null) {
      tokens.push(opts.bosId);
      mask.push(message.masked);
    }
    const trim = spm && !startOfTurn && !prevEndsWithSpace;
    const whole = message.content.join("");
    const text = spm ? whole.replace(/ +$/, "") : whole;
    const ids = trim
      ? encodeTrimmed(tokenizer, text)
      : tokenizer.encode(text, { bos: false, eos: false });
    pushIds({ tokens, mask }, ids, message.masked);
    prevEndsWithSpace = whole.endsWith(" ");
    if (endOfTurn) {
      if (opts.eosId !== null) {
        tokens.push(opts.eosId);
        mask.push(message.masked);
      }
      startOfTurn = true;
    } else startOfTurn = false;
    if (opts.maxSeqLen !== null && tokens.length >= opts.maxSeqLen) break;
  }
  if (opts.maxSeqLen !== null) {
    const eos = opts.eosId ?? undefined;
    return {
      tokens: truncate(tokens, opts.maxSeqLen, eos),
      mask: truncate(mask, opts.maxSeqLen, opts.eosId !== null ? lastMasked : undefined),
    };
  }
  return { tokens, mask };
}

// ---- Llama 3 and ChatML ----

/**
 * tokenize_messages of a chat format built on the tokenizer's special tokens (llama3, chatml,
 * phi3, phi4): `addEnd` closes the conversation with EOS, `maxSeqLen` caps its length.
 */
type SpecialTokenFormat = (
  tokenizer: Tokenizer,
  messages: readonly Message[],
  addEnd: boolean,
  maxSeqLen: number | null,
) => TokenizedMessages;

/** Python's str.strip() whitespace set. */
const PY_WS =
  "[\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
const PY_STRIP = new RegExp(`^${PY_WS}+|${PY_WS}+$`, "g");

const tokenizeLlama3: SpecialTokenFormat = (tokenizer, messages, addEnd, maxSeqLen) => {
  const enc = (s: string) => tokenizer.encode(s, { bos: false, eos: false });
  const startHeader = requireSpecial(tokenizer, "<|start_header_id|>", "llama3");
  const endHeader = requireSpecial(tokenizer, "<|end_header_id|>", "llama3");
  const eot = requireSpecial(tokenizer, "<|eot_id|>", "llama3");
  const eom = specialTokenId(tokenizer, "<|eom_id|>") ?? eot;
  const pythonTag = specialTokenId(tokenizer, "<|python_tag|>");
  const tokens = tokenizer.bosId >= 0 ? [tokenizer.bosId] : [];
  const mask = tokens.map(() => true);
  const newlines = enc("\n\n");
  messages.forEach((m, i) => {
    if (maxSeqLen !== null && tokens.length >= maxSeqLen) return;
    const ids = [startHeader, ...enc(m.role.replace(PY_STRIP, "")), endHeader, ...newlines];
    if (m.ipython && pythonTag !== undefined) ids.push(pythonTag);
    for (const piece of m.content) ids.push(...enc(piece.replace(PY_STRIP, "")));
    const addEndHere = i === messages.length - 1 ? addEnd : true;
    if (addEndHere) ids.push(m.eot ? eot : eom);
    pushIds({ tokens, mask }, ids, m.masked);
  });
  if (addEnd) {
    tokens.push(tokenizer.eosId);
    mask.push(true);
  }
  if (maxSeqLen === null) return { tokens, mask };
  return truncateToEnd({ tokens, mask }, maxSeqLen, addEnd ? tokenizer.eosId : undefined);
};

/**
 * Qwen2/2.5/3's tokenize_messages. Tool use follows Qwen2.5 (when the tokenizer has the
 * <tool_call> special token): an assistant tool call (`ipython`) is wrapped in
 * `<tool_call>\n...\n</tool_call>`, and a run of tool results (role ipython) becomes one user
 * turn with each result in `<tool_response>\n...\n</tool_response>`. Qwen2 (no <tool_call>)
 * writes ipython messages bare. The last assistant message gets no `<|im_end|>\n`; the EOS
 * added after it (<|im_end|> for Qwen2.5/3) closes it.
 */
const tokenizeChatMl: SpecialTokenFormat = (tokenizer, messages, addEnd, maxSeqLen) => {
  const enc = (s: string) => tokenizer.encode(s, { bos: false, eos: false });
  const imStart = requireSpecial(tokenizer, "<|im_start|>", "chatml");
  const imEnd = requireSpecial(tokenizer, "<|im_end|>", "chatml");
  const toolCall = specialTokenId(tokenizer, "<tool_call>");
  const toolCallEnd = specialTokenId(tokenizer, "</tool_call>");
  const tools = toolCall !== undefined && toolCallEnd !== undefined; // Qwen2.5 and later
  const newline = enc("\n");
  const tokens: number[] = [];
  const mask: boolean[] = [];
  const n = messages.length;
  for (let i = 0; i < n; i++) {
    const m = messages[i];
    const ids: number[] = [];
    const isTool = m.role === "ipython";
    // header
    if (isTool && tools) {
      if (i === 0 || messages[i - 1].role !== "ipython") {
        ids.push(imStart, ...enc("user\n"), ...enc("<tool_response>\n"));
      } else ids.push(...enc("\n<tool_response>\n"));
    } else if (!isTool) {
      ids.push(imStart, ...enc(`${m.role}\n`));
      if (tools && m.role === "assistant" && m.ipython) ids.push(toolCall!, ...newline);
    }
    for (const piece of m.content) ids.push(...enc(piece));
    // footer
    if (isTool && tools) {
      ids.push(...enc("\n</tool_response>"));
      if (i === n - 1 || messages[i + 1].role !== "ipython") ids.push(imEnd, ...newline);
    } else if (!isTool) {
      if (tools && m.role === "assistant" && m.ipython) ids.push(...newline, toolCallEnd!);
      if (m.role !== "assistant" || i !== n - 1) ids.push(imEnd, ...newline);
    }
    pushIds({ tokens, mask }, ids, m.masked);
    if (maxSeqLen !== null && tokens.length >= maxSeqLen) break;
  }
  if (addEnd) {
    tokens.push(tokenizer.eosId);
    mask.push(mask.length > 0 ? mask[mask.length - 1] : true);
  }
  if (maxSeqLen === null) return { tokens, mask };
  return truncateToEnd({ tokens, mask }, maxSeqLen, addEnd ? tokenizer.eosId : undefined);
};

const PHI3_ROLES: Partial<Record<Message["role"], string>> = {
  user: "<|user|>",
  assistant: "<|assistant|>",
  system: "<|system|>",
};

const tokenizePhi3: SpecialTokenFormat = (tokenizer, messages, addEnd, maxSeqLen) => {
  const end = requireSpecial(tokenizer, "<|end|>", "phi3");
  const roleIds = new Map<string, number>();
  for (const [role, tag] of Object.entries(PHI3_ROLES)) {
    roleIds.set(role, requireSpecial(tokenizer, tag, "phi3"));
  }
  // torchtune: encode("\n") as is (SentencePiece: "▁" + "\n"), content with trim_leading_whitespace
  const newline = tokenizer.encode("\n", { bos: false, eos: false });
  const tokens: number[] = [];
  const mask: boolean[] = [];
  let startOfTurn = true;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i];
    const role = roleIds.get(m.role);
    if (role === undefined) {
      throw new TuneError(
        `chat_format phi3 has no role ${m.role} (only system, user, assistant); ` +
          `drop or remap those messages, or use another chat_format`,
      );
    }
    const ids: number[] = [];
    if (startOfTurn && tokenizer.bosId >= 0) ids.push(tokenizer.bosId);
    ids.push(role, ...newline);
    for (const piece of m.content) ids.push(...encodeTrimmed(tokenizer, piece.replace(/ +$/, "")));
    const open = !addEnd && m.role === "assistant" && i === messages.length - 1;
    if (!open) ids.push(end, ...newline);
    const endOfTurn = m.role === "assistant" && addEnd;
    if (endOfTurn) ids.push(tokenizer.eosId);
    startOfTurn = endOfTurn;
    pushIds({ tokens, mask }, ids, m.masked);
    if (maxSeqLen !== null && tokens.length >= maxSeqLen) break;
  }
  // torchtune truncates only when the limit is reached (a shorter sample keeps its last token)
  if (maxSeqLen === null || tokens.length < maxSeqLen) return { tokens, mask };
  return truncateToEnd({ tokens, mask }, maxSeqLen, addEnd ? tokenizer.eosId : undefined);
};

/** Phi-4's tokenize_messages (see the module doc). */
const tokenizePhi4: SpecialTokenFormat = (tokenizer, messages, addEnd, maxSeqLen) => {
  const imStart = requireSpecial(tokenizer, "<|im_start|>", "phi4");
  const imSep = requireSpecial(tokenizer, "<|im_sep|>", "phi4");
  const imEnd = requireSpecial(tokenizer, "<|im_end|>", "phi4");
  const enc = (s: string) => tokenizer.encode(s, { bos: false, eos: false });
  const tokens: number[] = [];
  const mask: boolean[] = [];
  for (const m of messages) {
    const ids = [imStart, ...enc(m.role), imSep];
    for (const piece of m.content) ids.push(...enc(piece.replace(/ +$/, "")));
    if (m.role !== "assistant" || addEnd) ids.push(imEnd);
    pushIds({ tokens, mask }, ids, m.masked);
    if (maxSeqLen !== null && tokens.length >= maxSeqLen) break;
  }
  if (maxSeqLen === null || tokens.length < maxSeqLen) return { tokens, mask };
  return truncateToEnd({ tokens, mask }, maxSeqLen, addEnd ? tokenizer.eosId : undefined);
};

const SPECIAL_TOKEN_FORMATS = {
  llama3: tokenizeLlama3,
  chatml: tokenizeChatMl,
  phi3: tokenizePhi3,
  phi4: tokenizePhi4,
} satisfies Record<string, SpecialTokenFormat>;

/** Tokenize a conversation in a chat format; see the module doc for each format. */
export function tokenizeMessages(
  tokenizer: Tokenizer,
  messages: readonly Message[],
  format: ChatFormat,
  options: TokenizeMessagesOptions = {},
): TokenizedMessages {
  const maxSeqLen = options.maxSeqLen ?? null;
  const addEnd = options.addEnd ?? true;
  if (format === "hf") return tokenizeHfChat(tokenizer, messages, { maxSeqLen, addEnd });
  // the tokenizer's prompt template first, as torchtune's tokenize_messages applies it
  const template = tokenizer.promptTemplate;
  if (template?.tags) {
    if (format === "chatml" && template.name === "torchtune.data.ChatMLTemplate") {
      // torchtune's Qwen2 tokenizers assert the same
      throw new TuneError(
        `prompt_template ChatMLTemplate with the chatml chat format would wrap each message in <|im_start|> twice; unset tokenizer.prompt_template`,
      );
    }
    messages = applyPromptTemplate(messages, template);
  }
  const bosId = tokenizer.bosId >= 0 ? tokenizer.bosId : null; // -1: the tokenizer has no BOS
  const spmOpts = { bosId, eosId: addEnd ? tokenizer.eosId : null, maxSeqLen };
  switch (format) {
    case "none":
      return tokenizeNoSpecial(tokenizer, messages, spmOpts);
    case "llama2":
      return tokenizeNoSpecial(tokenizer, llama2Template(messages), spmOpts);
    case "plain":
      return tokenizeNoSpecial(tokenizer, applyPromptTemplate(messages, PLAIN_TEMPLATE), spmOpts);
    case "chatml_template":
    case "mistral": {
      const name = format === "mistral"
        ? "torchtune.models.mistral.MistralChatTemplate"
        : "torchtune.data.ChatMLTemplate";
      const templated = applyPromptTemplate(messages, builtInTemplate(name));
      return tokenizeNoSpecial(tokenizer, templated, spmOpts);
    }
    case "llama3":
    case "chatml":
    case "phi3":
    case "phi4":
      return SPECIAL_TOKEN_FORMATS[format](tokenizer, messages, addEnd, maxSeqLen);
  }
}
