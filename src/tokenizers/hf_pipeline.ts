/**
 * The normalizer, pre-tokenizer and decoder stages of a Hugging Face tokenizer.json, built from
 * their JSON as the `tokenizers` library defines them. Unsupported stage types are TuneErrors.
 */
import { TuneError } from "../errors.ts";
import { bytesToByteLevel, CHAR_TO_BYTE } from "./_byte_level.ts";
import { compilePattern, GPT2_PATTERN } from "./_regex.ts";
import { PrecompiledCharsmap } from "./_sp_charsmap.ts";
import { utf8DecodeLossy, utf8DecodePerByte, utf8Encode } from "./_utf8.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

/** A piece of text flowing through pre-tokenization; `atStart` marks the one at input offset 0. */
export interface Piece {
  text: string;
  atStart: boolean;
}

export type Normalizer = (text: string) => string;
export type PreTokenizer = (pieces: Piece[]) => Piece[];
/** Decoders map the token strings of a sequence to new strings (joined at the end). */
export type Decoder = (tokens: string[]) => string[];

function unsupported(stage: string, type: unknown, source: string): TuneError {
  return new TuneError(
    `tokenizer ${source}: ${stage} type ${
      JSON.stringify(type)
    } is not supported (supported: BPE models with ByteLevel, Metaspace, Split, Digits, Whitespace stages); convert the tokenizer to a BPE tokenizer.json`,
  );
}

/** A String or Regex pattern object of tokenizer.json as a global RegExp. */
function patternOf(p: Json, source: string): RegExp {
  if (p && typeof p.String === "string") {
    return new RegExp(p.String.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&"), "gu");
  }
  if (p && typeof p.Regex === "string") return compilePattern(p.Regex, source);
  throw new TuneError(
    `tokenizer ${source}: pattern ${JSON.stringify(p)} is neither String nor Regex`,
  );
}

/** A `Sequence` stage: its steps applied in order. */
function sequence<T>(steps: ((x: T) => T)[]): (x: T) => T {
  return (x) => steps.reduce((acc, f) => f(acc), x);
}

// ---------------------------------------------------------------------------- normalizers

/** Build the normalizer of tokenizer.json's `normalizer` (null is the identity). */
export function buildNormalizer(j: Json, source: string): Normalizer {
  if (j === null || j === undefined) return (t) => t;
  switch (j.type) {
    case "Sequence":
      return sequence((j.normalizers as Json[]).map((n) => buildNormalizer(n, source)));
    case "NFC":
    case "NFD":
    case "NFKC":
    case "NFKD":
      return (t) => t.normalize(j.type);
    case "Lowercase":
      return (t) => t.toLowerCase();
    case "StripAccents":
      return (t) => t.normalize("NFD").replace(/\p{Mn}/gu, "");
    case "Prepend":
      return (t) => (t === "" ? t : j.prepend + t);
    case "Replace": {
      const re = patternOf(j.pattern, source);
      const content = String(j.content);
      return (t) => t.replace(re, () => content);
    }
    case "Strip":
      return (t) => {
        let s = t;
        if (j.strip_left ?? true) s = s.replace(/^\p{White_Space}+/u, "");
        if (j.strip_right ?? true) s = s.replace(/\p{White_Space}+$/u, "");
        return s;
      };
    case "Precompiled": {
      if (!j.precompiled_charsmap) return (t) => t;
      const blob = Uint8Array.from(atob(j.precompiled_charsmap), (c) => c.charCodeAt(0));
      const map = new PrecompiledCharsmap(blob);
      return (t) => map.normalize(t);
    }
    default:
      throw unsupported("normalizer", j.type, source);
  }
}

// ---------------------------------------------------------------------------- pre-tokenizers

type Behavior = "Isolated" | "Removed" | "MergedWithPrevious" | "MergedWithNext" | "Contiguous";

/** Split `text` at the matches of `re` with the `tokenizers` split behaviors. */
export function splitText(text: string, re: RegExp, behavior: Behavior, invert = false): string[] {
  const spans: [number, number, boolean][] = [];
  let prev = 0;
  re.lastIndex = 0;
  for (const m of text.matchAll(re)) {
    if (m[0] === "") continue;
    const start = m.index!;
    if (start > prev) spans.push([prev, start, invert]);
    spans.push([start, start + m[0].length, !invert]);
    prev = start + m[0].length;
  }
  if (prev < text.length) spans.push([prev, text.length, invert]);
  let out: [number, number][] = [];
  switch (behavior) {
    case "Isolated":
      out = spans.map(([s, e]) => [s, e]);
      break;
    case "Removed":
      out = spans.filter(([, , m]) => !m).map(([s, e]) => [s, e]);
      break;
    case "MergedWithPrevious": {
      let prevMatch = false;
      for (const [s, e, m] of spans) {
        if (m && !prevMatch && out.length > 0) out[out.length - 1][1] = e;
        else out.push([s, e]);
        prevMatch = m;
      }
      break;
    }
    case "MergedWithNext": {
      let nextMatch = false;
      for (let i = spans.length - 1; i >= 0; i--) {
        const [s, e, m] = spans[i];
        if (m && !nextMatch && out.length > 0) out[out.length - 1][0] = s;
        else out.push([s, e]);
        nextMatch = m;
      }
      out.reverse();
      break;
    }
    case "Contiguous": {
      let prevMatch = false;
      for (const [s, e, m] of spans) {
        if (m === prevMatch && out.length > 0) out[out.length - 1][1] = e;
        else out.push([s, e]);
        prevMatch = m;
      }
      break;
    }
  }
  return out.map(([s, e]) => text.slice(s, e)).filter((t) => t !== "");
}

function splitEach(pieces: Piece[], f: (text: string) => string[]): Piece[] {
  const out: Piece[] = [];
  for (const p of pieces) {
    f(p.text).forEach((text, i) => out.push({ text, atStart: p.atStart && i === 0 }));
  }
  return out;
}

/** Build the pre-tokenizer of tokenizer.json's `pre_tokenizer` (null keeps each piece whole). */
export function buildPreTokenizer(j: Json, source: string): PreTokenizer {
  if (j === null || j === undefined) return (p) => p;
  switch (j.type) {
    case "Sequence":
      return sequence((j.pretokenizers as Json[]).map((p) => buildPreTokenizer(p, source)));
    case "ByteLevel": {
      const re = (j.use_regex ?? true) ? compilePattern(GPT2_PATTERN, source) : undefined;
      const addPrefix = j.add_prefix_space ?? true;
      return (pieces) => {
        const split = splitEach(pieces, (t) => {
          const s = addPrefix && !t.startsWith(" ") ? " " + t : t;
          return re ? splitText(s, re, "Isolated") : [s];
        });
        return split.map((p) => ({
          text: bytesToByteLevel(utf8Encode(p.text)),
          atStart: p.atStart,
        }));
      };
    }
    case "Metaspace": {
      const rep: string = j.replacement ?? "\u2581";
      const scheme: string = j.prepend_scheme ??
        ((j.add_prefix_space ?? true) ? "always" : "never");
      const split = j.split ?? true;
      const repRe = new RegExp(rep.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&"), "gu");
      return (pieces) => {
        const out: Piece[] = [];
        for (const p of pieces) {
          let s = p.text.replaceAll(" ", rep);
          const prepend = scheme === "always" || (scheme === "first" && p.atStart);
          if (prepend && !s.startsWith(rep)) s = rep + s;
          const parts = split ? splitText(s, repRe, "MergedWithNext") : [s];
          parts.forEach((text, i) => out.push({ text, atStart: p.atStart && i === 0 }));
        }
        return out;
      };
    }
    case "Split": {
      const re = patternOf(j.pattern, source);
      const behavior = j.behavior as Behavior;
      if (
        !["Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"].includes(
          behavior,
        )
      ) throw unsupported("Split behavior", behavior, source);
      return (pieces) => splitEach(pieces, (t) => splitText(t, re, behavior, j.invert ?? false));
    }
    case "Digits": {
      const re = j.individual_digits ? /\p{N}/gu : /\p{N}+/gu;
      return (pieces) => splitEach(pieces, (t) => splitText(t, re, "Isolated"));
    }
    case "Whitespace":
      return (pieces) =>
        splitEach(
          pieces,
          (t) => splitText(t, /[\p{L}\p{N}_]+|[^\p{L}\p{N}_\s]+/gu, "Removed", true),
        );
    case "WhitespaceSplit":
      return (pieces) => splitEach(pieces, (t) => splitText(t, /\p{White_Space}+/gu, "Removed"));
    default:
      throw unsupported("pre_tokenizer", j.type, source);
  }
}

// ---------------------------------------------------------------------------- decoders

const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

/** Build the decoder of tokenizer.json's `decoder` (null joins tokens with spaces, as `tokenizers`). */
export function buildDecoder(j: Json, source: string): Decoder {
  if (j === null || j === undefined) return (tokens) => [tokens.join(" ")];
  switch (j.type) {
    case "Sequence":
      return sequence((j.decoders as Json[]).map((d) => buildDecoder(d, source)));
    case "ByteLevel":
      return (tokens) => {
        const bytes: number[] = [];
        for (const t of tokens) {
          const mapped: number[] = [];
          let ok = true;
          for (const c of t) {
            const b = CHAR_TO_BYTE.get(c);
            if (b === undefined) {
              ok = false;
              break;
            }
            mapped.push(b);
          }
          // a token with characters outside the byte map (an added token) is taken as UTF-8
          for (const b of ok ? mapped : utf8Encode(t)) bytes.push(b);
        }
        return [utf8DecodeLossy(new Uint8Array(bytes))];
      };
    case "Replace": {
      const re = patternOf(j.pattern, source);
      const content = String(j.content);
      return (tokens) => tokens.map((t) => t.replace(re, () => content));
    }
    case "ByteFallback":
      return (tokens) => {
        const out: string[] = [];
        let bytes: number[] = [];
        const flush = () => {
          if (bytes.length > 0) out.push(utf8DecodePerByte(new Uint8Array(bytes)));
          bytes = [];
        };
        for (const t of tokens) {
          const m = BYTE_PIECE.exec(t);
          if (m) bytes.push(parseInt(m[1], 16));
          else {
            flush();
            out.push(t);
          }
        }
        flush();
        return out;
      };
    case "Fuse":
      return (tokens) => [tokens.join("")];
    case "Strip": {
      const content = String(j.content);
      const start = Number(j.start ?? 0);
      const stop = Number(j.stop ?? 0);
      return (tokens) =>
        tokens.map((t) => {
          const chars = [...t];
          let a = 0;
          let b = chars.length;
          while (a < start && a < b && chars[a] === content) a++;
          let k = 0;
          while (k < stop && b > a && chars[b - 1] === content) {
            b--;
            k++;
          }
          return chars.slice(a, b).join("");
        });
    }
    case "Metaspace": {
      const rep: string = j.replacement ?? "\u2581";
      const scheme: string = j.prepend_scheme ??
        ((j.add_prefix_space ?? true) ? "always" : "never");
      // as `tokenizers`: in the first token every replacement character is dropped (not only
      // a leading one) unless the scheme is "never"; elsewhere each becomes a space
      return (tokens) =>
        tokens.map((t, i) => t.replaceAll(rep, i === 0 && scheme !== "never" ? "" : " "));
    }
    default:
      throw unsupported("decoder", j.type, source);
  }
}
