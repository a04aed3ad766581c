/**
 * Finding a checkpoint's Jinja chat template: `chat_template` of a Hugging Face
 * tokenizer_config.json (a string, or a list of `{name, template}` of which "default" is
 * taken), or a `chat_template.jinja` file, with `bos_token`/`eos_token` from the config.
 */
import { TuneError } from "../errors.ts";
import type { ChatTemplate } from "./types.ts";

/** Directory part of a path with its trailing slash ("" for a bare name). */
function dirOf(path: string): string {
  return path.includes("/") ? path.slice(0, path.lastIndexOf("/") + 1) : "";
}

function readText(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

/** A special-token entry of tokenizer_config.json: a string or an AddedToken `{content}`. */
function tokenText(v: unknown): string {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
    return (v as { content: string }).content;
  }
  return "";
}

/** The template of a parsed tokenizer_config.json, or undefined when it has none. */
function templateOf(config: Record<string, unknown>, source: string): string | undefined {
  const t = config.chat_template;
  if (t === undefined || t === null) return undefined;
  if (typeof t === "string") return t;
  if (Array.isArray(t)) {
    const named = t.find((x) => x && (x as { name?: unknown }).name === "default") ?? t[0];
    const text = (named as { template?: unknown } | undefined)?.template;
    if (typeof text === "string") return text;
  }
  throw new TuneError(
    `${source}: chat_template must be a string or a list of {name, template}; fix the file`,
  );
}

/**
 * Read a chat template from a tokenizer_config.json or a .jinja file at `path` (a .jinja file
 * takes bos/eos from a tokenizer_config.json beside it). Throws a TuneError when unreadable.
 */
export function readChatTemplate(path: string, force: boolean): ChatTemplate {
  const text = readText(path);
  if (text === undefined) {
    throw new TuneError(
      `tokenizer.chat_template file ${path} not found; point it at the model's tokenizer_config.json`,
    );
  }
  let config: Record<string, unknown> = {};
  let template: string | undefined;
  if (path.endsWith(".jinja")) {
    template = text;
    const beside = readText(dirOf(path) + "tokenizer_config.json");
    if (beside !== undefined) config = parseConfig(beside, dirOf(path) + "tokenizer_config.json");
  } else {
    config = parseConfig(text, path);
    template = templateOf(config, path) ??
      readText(dirOf(path) + "chat_template.jinja");
  }
  if (template === undefined) {
    throw new TuneError(
      `${path} has no chat_template; use a checkpoint that ships one, or a built-in dataset.chat_format`,
    );
  }
  return {
    template,
    bosToken: tokenText(config.bos_token),
    eosToken: tokenText(config.eos_token),
    source: path,
    force,
  };
}

function parseConfig(text: string, path: string): Record<string, unknown> {
  try {
    const v = JSON.parse(text);
    if (v && typeof v === "object" && !Array.isArray(v)) return v;
  } catch {
    // reported below
  }
  throw new TuneError(`${path} is not a JSON object; pass the model's tokenizer_config.json`);
}

/**
 * The chat template that comes with the tokenizer file at `tokenizerPath`: tokenizer_config.json
 * (or chat_template.jinja) in its folder or the folder above (Llama 3's original/), or undefined.
 */
export function findChatTemplate(tokenizerPath: string, force: boolean): ChatTemplate | undefined {
  const dir = dirOf(tokenizerPath);
  for (const d of [dir, dir + "../"]) {
    for (const name of ["tokenizer_config.json", "chat_template.jinja"]) {
      const text = readText(d + name);
      if (text === undefined) continue;
      if (name === "tokenizer_config.json") {
        const config = parseConfig(text, d + name);
        if (
          templateOf(config, d + name) === undefined &&
          readText(d + "chat_template.jinja") === undefined
        ) continue;
      }
      return readChatTemplate(d + name, force);
    }
  }
  return undefined;
}

/**
 * The `tokenizer.chat_template` config value: null -> the template found beside the file
 * when `autoFind` (the generic loader; auto uses it only where no built-in format fits), "hf"
 * -> the template beside the file, required, always used; a path -> that file, always used.
 */
export function chatTemplateFor(
  value: unknown,
  tokenizerPath: string,
  autoFind: boolean,
): ChatTemplate | null {
  if (value === null || value === undefined) {
    return autoFind ? findChatTemplate(tokenizerPath, false) ?? null : null;
  }
  if (typeof value !== "string" || value === "") {
    throw new TuneError(
      `tokenizer.chat_template must be hf or a path to tokenizer_config.json / a .jinja file, got ${
        JSON.stringify(value)
      }`,
    );
  }
  if (value === "hf") {
    const found = findChatTemplate(tokenizerPath, true);
    if (!found) {
      throw new TuneError(
        `tokenizer.chat_template=hf: no tokenizer_config.json with a chat_template beside ${tokenizerPath}; download it with the checkpoint or set chat_template to its path`,
      );
    }
    return found;
  }
  return readChatTemplate(value, true);
}
