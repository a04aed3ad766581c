/**
 * chat_format "hf": a checkpoint's own Jinja chat template (tokenizer_config.json), rendered
 * with @huggingface/jinja (the implementation of the Hugging Face JavaScript libraries), then
 * tokenized with the special tokens in the text read as special ids.
 *
 * Message boundaries (for masks): the conversation's first k messages are rendered for every
 * k; message k owns the text that rendering k messages adds to rendering k - 1 (its header,
 * content and footer, as torchtune's tokenizers give a message's header and footer its mask).
 * A template that renders an earlier message differently once later ones follow (e.g. one that
 * drops past reasoning) has no such boundaries and is refused with a clear message.
 *
 * Each message's text is encoded on its own; the boundaries fall after a turn's end marker,
 * where byte-level BPE (Llama 3, Qwen) splits anyway, so the ids equal encoding the whole
 * text. With SentencePiece every text between special tokens gets the dummy prefix (as
 * Hugging Face's Llama/Mistral tokenizers and Mistral's reference encode them), and a message
 * boundary inside such a text is encoded without it.
 *
 * End of a training sample (`addEnd`): whitespace after the last special token is dropped
 * (Qwen's template ends a turn with `<|im_end|>\n`; a model that stops at its EOS never
 * writes the newline) and the tokenizer's EOS is appended unless the text already ends with
 * it, taking the last message's mask. With these rules Qwen2.5's and Llama 3.1's templates
 * give the ids of the built-in chatml and llama3 formats (tests/data_hf_chat_test.ts).
 *
 * Without `addEnd` (a generation prompt) the template's `add_generation_prompt` text is
 * appended, masked.
 *
 * Messages map to Hugging Face's dicts: role ipython/tool -> "tool"; an assistant tool call
 * (`ipython`) whose text is JSON lines `{"name": ..., "arguments": ...}` -> `tool_calls`.
 */
import { Template } from "@huggingface/jinja";
import { TuneError } from "../errors.ts";
import type { ChatTemplate, Tokenizer } from "../tokenizers/types.ts";
import type { Message } from "./types.ts";

/** A Hugging Face chat message (the fields templates read). */
export interface HfMessage {
  role: string;
  content: string;
  tool_calls?: { type: "function"; function: { name: string; arguments: unknown } }[];
}

/** Options of `tokenizeHfChat`. */
export interface HfChatOptions {
  maxSeqLen: number | null;
  addEnd: boolean;
}

const compiled = new WeakMap<ChatTemplate, Template>();

function compile(chat: ChatTemplate): Template {
  let t = compiled.get(chat);
  if (t === undefined) {
    try {
      t = new Template(chat.template);
    } catch (e) {
      throw new TuneError(
        `chat template of ${chat.source} does not parse (${
          (e as Error).message
        }); fix it or use a built-in dataset.chat_format`,
      );
    }
    compiled.set(chat, t);
  }
  return t;
}

/** Tool calls from an assistant tool-call text: JSON lines `{"name", "arguments"}`, or undefined. */
function toolCallsOf(text: string): HfMessage["tool_calls"] {
  const calls: NonNullable<HfMessage["tool_calls"]> = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    try {
      const v = JSON.parse(line);
      if (typeof v !== "object" || v === null || typeof v.name !== "string") return undefined;
      calls.push({ type: "function", function: { name: v.name, arguments: v.arguments ?? {} } });
    } catch {
      return undefined;
    }
  }
  return calls.length > 0 ? calls : undefined;
}

/** tune messages -> Hugging Face chat dicts. */
export function toHfMessages(messages: readonly Message[]): HfMessage[] {
  return messages.map((m) => {
    const content = m.content.join("");
    const role = m.role === "ipython" ? "tool" : m.role;
    if (m.role === "assistant" && m.ipython) {
      const calls = toolCallsOf(content);
      if (calls) return { role, content: "", tool_calls: calls };
    }
    return { role, content };
  });
}

/**
 * Render `messages` with the checkpoint's template; `extra` adds or overrides context
 * variables (e.g. `tools`).
 */
export function renderChat(
  chat: ChatTemplate,
  messages: readonly HfMessage[],
  addGenerationPrompt: boolean,
  extra: Record<string, unknown> = {},
): string {
  try {
    return compile(chat).render({
      messages,
      bos_token: chat.bosToken,
      eos_token: chat.eosToken,
      add_generation_prompt: addGenerationPrompt,
      ...extra,
    });
  } catch (e) {
    throw new TuneError(
      `chat template of ${chat.source} failed on this conversation: ${
        (e as Error).message
      }; fix the data or use a built-in dataset.chat_format`,
    );
  }
}

/** Ends with one of the tokenizer's special tokens (after trailing whitespace is dropped). */
function endsWithSpecial(tokenizer: Tokenizer, text: string): boolean {
  for (const name of tokenizer.specialTokens?.keys() ?? []) {
    if (name !== "" && text.endsWith(name)) return true;
  }
  return false;
}

/** Tokenize a conversation with the tokenizer's Jinja chat template; see the module doc. */
export function tokenizeHfChat(
  tokenizer: Tokenizer,
  messages: readonly Message[],
  options: HfChatOptions,
): { tokens: number[]; mask: boolean[] } {
  const chat = tokenizer.chatTemplate;
  if (!chat) {
    throw new TuneError(
      "chat_format hf needs the checkpoint's chat template; set tokenizer.chat_template",
    );
  }
  const hf = toHfMessages(messages);
  // texts[k]: the first k messages rendered
  const texts = [""];
  for (let k = 1; k <= hf.length; k++) texts.push(renderChat(chat, hf.slice(0, k), false));
  const segments: { text: string; masked: boolean }[] = [];
  for (let k = 1; k <= hf.length; k++) {
    if (!texts[k].startsWith(texts[k - 1])) {
      throw new TuneError(
        `chat template of ${chat.source} renders message ${k - 2} differently once message ${
          k - 1
        } follows, so tune cannot tell which tokens belong to which message; use a built-in dataset.chat_format`,
      );
    }
    segments.push({ text: texts[k].slice(texts[k - 1].length), masked: messages[k - 1].masked });
  }
  if (!options.addEnd) {
    const full = texts[hf.length];
    const prompt = renderChat(chat, hf, true);
    if (prompt.startsWith(full) && prompt.length > full.length) {
      segments.push({ text: prompt.slice(full.length), masked: true });
    }
  } else if (segments.length > 0) {
    const last = segments[segments.length - 1];
    const trimmed = last.text.replace(/\s+$/, "");
    if (trimmed !== last.text && endsWithSpecial(tokenizer, trimmed)) last.text = trimmed;
  }
  const tokens: number[] = [];
  const mask: boolean[] = [];
  const trim = addsDummyPrefixOnce(tokenizer);
  segments.forEach((seg, i) => {
    // SentencePiece: text right after a special token starts a new piece of input (its dummy
    // prefix kept, as Hugging Face's and Mistral's tokenizers encode each text between special
    // tokens); other boundaries fall inside a text and are encoded without it
    const continues = i > 0 && trim && !endsWithSpecial(tokenizer, segments[i - 1].text);
    const ids = continues ? encodeContinuation(tokenizer, seg.text) : encode(tokenizer, seg.text);
    for (const id of ids) {
      tokens.push(id);
      mask.push(seg.masked);
    }
  });
  if (options.addEnd && tokens[tokens.length - 1] !== tokenizer.eosId) {
    tokens.push(tokenizer.eosId);
    mask.push(mask.length > 0 ? mask[mask.length - 1] : true);
  }
  const max = options.maxSeqLen;
  if (max !== null && tokens.length > max) {
    // as torchtune's truncate: keep max tokens, the last one forced to EOS when training
    tokens.length = max;
    mask.length = max;
    if (options.addEnd) {
      tokens[max - 1] = tokenizer.eosId;
      mask[max - 1] = true;
    }
  }
  return { tokens, mask };
}

function encode(tokenizer: Tokenizer, text: string): number[] {
  return tokenizer.encode(text, { bos: false, eos: false, parseSpecial: true });
}

const dummyPrefix = new WeakMap<Tokenizer, boolean>();

/** True when the tokenizer prepends a space to every text it encodes (SentencePiece). */
function addsDummyPrefixOnce(tokenizer: Tokenizer): boolean {
  let v = dummyPrefix.get(tokenizer);
  if (v === undefined) {
    const a = encode(tokenizer, "a");
    const na = encode(tokenizer, "\na");
    const n = encode(tokenizer, "\n");
    v = na.length !== n.length + a.length || na.slice(n.length).some((id, i) => id !== a[i]);
    dummyPrefix.set(tokenizer, v);
  }
  return v;
}

/** Encode a text that continues a previous one, without SentencePiece's dummy prefix. */
function encodeContinuation(tokenizer: Tokenizer, text: string): number[] {
  const n = encode(tokenizer, "\n");
  const full = encode(tokenizer, "\n" + text);
  if (full.length < n.length || n.some((id, i) => id !== full[i])) return encode(tokenizer, text);
  return full.slice(n.length);
}
