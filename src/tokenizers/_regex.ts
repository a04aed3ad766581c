/**
 * Pre-tokenization regexes: the patterns Llama 3 (tiktoken, Rust regex) and Hugging Face
 * tokenizer.json files (Oniguruma) use, translated to JS RegExp with Unicode property escapes.
 * `\s` in those engines is the Unicode White_Space property; JS's `\s` differs (it adds U+FEFF
 * and lacks U+0085), so it is rewritten. `(?i:...)` groups are native in Deno's V8.
 */
import { TuneError } from "../errors.ts";

/** Llama 3's pattern (tiktoken's cl100k pattern with digits in groups of up to 3). */
export const LLAMA3_PATTERN = String
  .raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;

/** Qwen2's pattern (single digits). */
export const QWEN2_PATTERN = String
  .raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;

/** GPT-2's pattern, used by the ByteLevel pre-tokenizer when use_regex is true. */
export const GPT2_PATTERN = String
  .raw`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`;

/** Rewrite `\s`/`\S` (outside and inside classes) to White_Space property escapes. */
export function translatePattern(pattern: string): string {
  let out = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "\\" && i + 1 < pattern.length) {
      const n = pattern[i + 1];
      if (n === "s") out += String.raw`\p{White_Space}`;
      else if (n === "S") out += String.raw`\P{White_Space}`;
      else out += c + n;
      i++;
      continue;
    }
    out += c;
  }
  return out;
}

/** A global Unicode RegExp for `pattern`; a pattern JS cannot compile is a TuneError naming `source`. */
export function compilePattern(pattern: string, source: string): RegExp {
  try {
    return new RegExp(translatePattern(pattern), "gu");
  } catch (e) {
    throw new TuneError(
      `tokenizer ${source}: pre-tokenizer regex ${JSON.stringify(pattern)} is not supported (${
        (e as Error).message
      }); use a tokenizer whose pattern uses \\p{L}/\\p{N}/\\s classes`,
    );
  }
}

/** The pieces of `text` matched by `re` (gaps between matches are dropped, as tiktoken does). */
export function findAll(re: RegExp, text: string): string[] {
  const out: string[] = [];
  re.lastIndex = 0;
  for (const m of text.matchAll(re)) if (m[0] !== "") out.push(m[0]);
  return out;
}
