/**
 * tiktoken-format byte-level BPE (Llama 3's tokenizer.model): lines `base64(token bytes) rank`.
 * Text is split by the pre-tokenization regex, each piece's UTF-8 bytes are merged lowest rank
 * first (ties leftmost) as tiktoken's `_byte_pair_merge`, and a piece that is itself a token
 * maps straight to its rank. Special tokens take the ids after the last rank.
 */
import { TuneError } from "../errors.ts";
import { stopIdsOf, TokenizerBase } from "./_base.ts";
import { bpeMerge } from "./_bpe.ts";
import { compilePattern, findAll, LLAMA3_PATTERN } from "./_regex.ts";
import { SpecialSplitter } from "./_special.ts";
import { utf8DecodeLossy, utf8Encode } from "./_utf8.ts";
import type { DecodeOptions, EncodeOptions } from "./types.ts";

/**
 * Llama 3's special tokens as offsets from the end of the ranks (torchtune's
 * LLAMA3_SPECIAL_TOKENS, where the base vocabulary has 128000 tokens): the named tokens, then
 * <|reserved_special_token_2|> .. <|reserved_special_token_244|> at offsets 13..255. torchtune
 * puts <|reserved_special_token_245|> at offset 11, <|video|> at 12 and <|image|> at 256.
 */
export function llama3SpecialTokens(baseVocabSize = 128000): Map<string, number> {
  const named: [string, number][] = [
    ["<|begin_of_text|>", 0],
    ["<|end_of_text|>", 1],
    ["<|reserved_special_token_0|>", 2],
    ["<|reserved_special_token_1|>", 3],
    ["<|finetune_right_pad_id|>", 4],
    ["<|step_id|>", 5],
    ["<|start_header_id|>", 6],
    ["<|end_header_id|>", 7],
    ["<|eom_id|>", 8],
    ["<|eot_id|>", 9],
    ["<|python_tag|>", 10],
    ["<|reserved_special_token_245|>", 11],
    ["<|video|>", 12],
    ["<|image|>", 256],
  ];
  const out = new Map<string, number>(named.map(([n, o]) => [n, baseVocabSize + o]));
  for (let i = 0; i < 243; i++) {
    out.set(`<|reserved_special_token_${2 + i}|>`, baseVocabSize + 13 + i);
  }
  return out;
}

/**
 * Special tokens that are not part of the text vocabulary: Llama 3's <|image|> (id 128256)
 * indexes the extra embedding rows of Llama 3.2 Vision, past the 128256 rows of a text model,
 * so it does not count in `vocabSize`.
 */
const MEDIA_TOKENS = new Set(["<|image|>"]);

/** Token bytes as a "binary string" (one UTF-16 unit per byte), the key of the rank map. */
function binary(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return s;
}

/** Parsed ranks: token bytes (binary string) -> rank, and rank -> bytes. */
export interface TiktokenRanks {
  ranks: Map<string, number>;
  bytesOf: Uint8Array[];
}

/** Parse tiktoken text; a malformed line is a TuneError naming `path` and the line. */
export function parseTiktoken(text: string, path: string): TiktokenRanks {
  const ranks = new Map<string, number>();
  const bytesOf: Uint8Array[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "") continue;
    const m = /^([A-Za-z0-9+/]+={0,2}) (\d+)$/.exec(line);
    let bytes: Uint8Array | undefined;
    if (m) {
      try {
        bytes = Uint8Array.from(atob(m[1]), (c) => c.charCodeAt(0));
      } catch {
        bytes = undefined;
      }
    }
    if (!m || !bytes) {
      throw new TuneError(
        `tokenizer file ${path} is corrupt at line ${
          i + 1
        } (expected "<base64 token> <rank>"); pass Llama 3's original tokenizer.model`,
      );
    }
    const rank = Number(m[2]);
    ranks.set(binary(bytes), rank);
    bytesOf[rank] = bytes;
  }
  if (ranks.size === 0) {
    throw new TuneError(`tokenizer file ${path} has no tokens; pass Llama 3's tokenizer.model`);
  }
  for (let b = 0; b < 256; b++) {
    if (!ranks.has(String.fromCharCode(b))) {
      throw new TuneError(
        `tokenizer file ${path} lacks the single byte 0x${
          b.toString(16).padStart(2, "0")
        }, so some text cannot be encoded; pass a complete byte-level BPE file`,
      );
    }
  }
  return { ranks, bytesOf };
}

/** Options of the tiktoken tokenizer. */
export interface TiktokenOptions {
  /** Special tokens by name with their ids (default Llama 3's, `llama3SpecialTokens()`). */
  specialTokens?: ReadonlyMap<string, number>;
  /** Pre-tokenization regex (default Llama 3's). */
  pattern?: string;
  bosToken?: string;
  eosToken?: string;
  padToken?: string;
  /** Tokens that also end generation (default <|eot_id|>, <|eom_id|>). */
  stopTokens?: readonly string[];
}

/** A tiktoken byte-level BPE tokenizer with Llama 3's special tokens by default. */
export class TiktokenTokenizer extends TokenizerBase {
  /** Number of ordinary (non-special) tokens. */
  readonly baseVocabSize: number;
  private readonly ranks: Map<string, number>;
  private readonly bytesOf: Uint8Array[];
  private readonly specialText = new Map<number, string>();
  private readonly pattern: RegExp;
  private readonly splitter: SpecialSplitter;
  private readonly cache = new Map<string, number[]>();

  constructor(parsed: TiktokenRanks, path: string, options: TiktokenOptions = {}) {
    super();
    this.ranks = parsed.ranks;
    this.bytesOf = parsed.bytesOf;
    this.baseVocabSize = parsed.bytesOf.length;
    const special = new Map(options.specialTokens ?? llama3SpecialTokens(this.baseVocabSize));
    let top = this.baseVocabSize;
    for (const [name, id] of special) {
      this.specialText.set(id, name);
      if (!MEDIA_TOKENS.has(name)) top = Math.max(top, id + 1);
    }
    this.pattern = compilePattern(options.pattern ?? LLAMA3_PATTERN, path);
    this.splitter = new SpecialSplitter(special);
    const id = (name: string | undefined, fallback: number) =>
      name === undefined ? fallback : special.get(name) ?? fallback;
    const eosId = id(options.eosToken ?? "<|end_of_text|>", -1);
    this.setIds({
      vocabSize: top,
      bosId: id(options.bosToken ?? "<|begin_of_text|>", -1),
      eosId,
      padId: id(options.padToken ?? "<|finetune_right_pad_id|>", eosId >= 0 ? eosId : 0),
      stopIds: stopIdsOf(eosId, options.stopTokens ?? ["<|eot_id|>", "<|eom_id|>"], special),
      specialTokens: special,
    });
  }

  /** Ids of one pre-tokenized piece. */
  private encodePiece(piece: string): number[] {
    const cached = this.cache.get(piece);
    if (cached) return cached;
    const key = binary(utf8Encode(piece));
    const whole = this.ranks.get(key);
    let ids: number[];
    if (whole !== undefined) {
      ids = [whole];
    } else {
      const merged = bpeMerge([...key], (l, r) => this.ranks.get(l + r));
      ids = merged.map((s) => this.ranks.get(s)!);
    }
    if (piece.length <= 64) {
      if (this.cache.size > 100_000) this.cache.clear(); // bound memory on huge corpora
      this.cache.set(piece, ids);
    }
    return ids;
  }

  private encodeOrdinary(text: string, out: number[]): void {
    for (const piece of findAll(this.pattern, text)) {
      for (const id of this.encodePiece(piece)) out.push(id);
    }
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const ids: number[] = [];
    if ((options.bos ?? true) && this.bosId >= 0) ids.push(this.bosId);
    if (options.parseSpecial) {
      for (const seg of this.splitter.split(text)) {
        if ("id" in seg) ids.push(seg.id);
        else this.encodeOrdinary(seg.text, ids);
      }
    } else {
      this.encodeOrdinary(text, ids);
    }
    if (options.eos && this.eosId >= 0) ids.push(this.eosId);
    return ids;
  }

  /**
   * Text of `ids`. With `skipSpecial` (the default), as torchtune's Llama3Tokenizer.decode: the
   * text is decoded with the special tokens written out, then each whole message header
   * (`<|start_header_id|>role<|end_header_id|>\n\n`) is removed, then every remaining
   * `<|...|>` token.
   */
  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const parts: number[] = [];
    for (const id of ids) {
      const bytes = this.bytesOf[id];
      if (bytes) {
        for (const b of bytes) parts.push(b);
        continue;
      }
      const name = this.specialText.get(id);
      if (name !== undefined) { for (const b of utf8Encode(name)) parts.push(b); }
    }
    const text = utf8DecodeLossy(new Uint8Array(parts));
    if (options.skipSpecial === false) return text;
    return text.replace(HEADER_RE, "").replace(SPECIAL_RE, "");
  }
}

/** A Llama 3 message header and any `<|...|>` token, as torchtune's Llama3Tokenizer removes them. */
const HEADER_RE = /<\|start_header_id\|>.*?<\|end_header_id\|>\n\n/g;
const SPECIAL_RE = /<\|.*?\|>/g;
