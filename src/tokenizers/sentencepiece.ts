/**
 * SentencePiece tokenization, BPE (Llama 2, Mistral, and llama2.c's tokenizer.bin) and unigram
 * (T5-style and multilingual models, torchtune's test tokenizer), following sentencepiece's
 * normalizer.cc, bpe_model.cc, unigram_model.cc (_unigram.ts) and SentencePieceProcessor's
 * Encode (byte fallback) and Decode.
 */
import { TokenizerBase } from "./_base.ts";
import { bpeMerge } from "./_bpe.ts";
import type { PrecompiledCharsmap } from "./_sp_charsmap.ts";
import { SpecialSplitter } from "./_special.ts";
import { UnigramModel } from "./_unigram.ts";
import { utf8DecodePerByte, utf8Encode } from "./_utf8.ts";
import type { DecodeOptions, EncodeOptions } from "./types.ts";

/** ModelProto.SentencePiece.Type. */
export const PieceType = {
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/** One vocabulary entry. */
export interface SpPiece {
  piece: string;
  score: number;
  type: number;
}

/** Everything encode and decode need from a SentencePiece model. */
export interface SpSpec {
  /** The segmentation algorithm (TrainerSpec.model_type); absent: BPE. */
  modelType?: "bpe" | "unigram";
  pieces: SpPiece[];
  byteFallback: boolean;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
  escapeWhitespaces: boolean;
  treatWhitespaceAsSuffix: boolean;
  unkId: number;
  bosId: number;
  eosId: number;
  padId: number;
  unkSurface: string;
  /** Character normalization before whitespace handling; undefined is the identity. */
  charsmap?: PrecompiledCharsmap;
}

const SPACE = "\u2581"; // ▁, SentencePiece's escaped space

/** A SentencePiece tokenizer (BPE or unigram). */
export class SentencePieceTokenizer extends TokenizerBase {
  private readonly spec: SpSpec;
  /** NORMAL, USER_DEFINED and UNUSED pieces: the ones merges may produce. */
  private readonly mergeable = new Map<string, number>();
  /** CONTROL, UNKNOWN and BYTE pieces. */
  private readonly reserved = new Map<string, number>();
  private readonly byteIds = new Int32Array(256).fill(-1);
  private splitter?: SpecialSplitter;
  private readonly unigram?: UnigramModel;
  /** user-defined symbols by first UTF-16 unit, longest first */
  private readonly userDefined = new Map<string, string[]>();

  constructor(spec: SpSpec) {
    super();
    this.spec = spec;
    const special = new Map<string, number>();
    spec.pieces.forEach((p, id) => {
      const normal = p.type === PieceType.NORMAL || p.type === PieceType.USER_DEFINED ||
        p.type === PieceType.UNUSED;
      const map = normal ? this.mergeable : this.reserved;
      if (!map.has(p.piece)) map.set(p.piece, id);
      if (p.type === PieceType.USER_DEFINED && p.piece !== "") {
        const list = this.userDefined.get(p.piece[0]) ?? [];
        list.push(p.piece);
        this.userDefined.set(p.piece[0], list);
      }
      if (p.type === PieceType.CONTROL) special.set(p.piece, id);
      if (p.type === PieceType.BYTE) {
        const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(p.piece);
        if (m) this.byteIds[parseInt(m[1], 16)] = id;
      }
    });
    // longest first, so the prefix match below takes the longest user-defined symbol
    for (const list of this.userDefined.values()) list.sort((a, b) => b.length - a.length);
    this.setIds({
      vocabSize: spec.pieces.length,
      bosId: spec.bosId,
      eosId: spec.eosId,
      padId: spec.padId >= 0 ? spec.padId : spec.eosId >= 0 ? spec.eosId : 0,
      stopIds: spec.eosId >= 0 ? [spec.eosId] : [],
      specialTokens: special,
    });
    if (spec.modelType === "unigram") this.unigram = new UnigramModel(spec.pieces);
  }

  /** The normalized text (spaces escaped to ▁, dummy prefix added) as sentencepiece's Normalizer. */
  normalize(text: string): string {
    const s = this.spec;
    let t = s.charsmap ? s.charsmap.normalize(text) : text;
    if (s.removeExtraWhitespaces) t = t.replace(/^ +/, "");
    if (t === "") return "";
    const space = s.escapeWhitespaces ? SPACE : " ";
    let out = s.addDummyPrefix && !s.treatWhitespaceAsSuffix ? space : "";
    let prevSpace = s.removeExtraWhitespaces;
    for (const ch of t) {
      if (ch === " ") {
        if (s.removeExtraWhitespaces && prevSpace) continue;
        out += space;
        prevSpace = true;
      } else {
        out += ch;
        prevSpace = false;
      }
    }
    if (s.removeExtraWhitespaces) {
      while (out.endsWith(space)) out = out.slice(0, out.length - space.length);
    }
    if (s.addDummyPrefix && s.treatWhitespaceAsSuffix) out += space;
    return out;
  }

  /** Pieces of `text` without BOS/EOS (before byte fallback). */
  private pieces(text: string): string[] {
    const normalized = this.normalize(text);
    // split into characters, keeping user-defined symbols whole and frozen
    const symbols: string[] = [];
    const frozen: boolean[] = [];
    let i = 0;
    while (i < normalized.length) {
      let match = "";
      for (const u of this.userDefined.get(normalized[i]) ?? []) {
        if (normalized.startsWith(u, i)) {
          match = u;
          break;
        }
      }
      frozen.push(match !== "");
      if (match === "") match = String.fromCodePoint(normalized.codePointAt(i)!);
      symbols.push(match);
      i += match.length;
    }
    // pieces of type UNUSED may be merged through but are split back afterwards
    const revMerge = new Map<string, [string, string]>();
    const merged = bpeMerge(symbols, (left, right) => {
      const piece = left + right;
      const id = this.mergeable.get(piece);
      if (id === undefined) return undefined;
      const p = this.spec.pieces[id];
      if (p.type === PieceType.UNUSED) revMerge.set(piece, [left, right]);
      return -p.score;
    }, frozen);
    if (revMerge.size === 0) return merged;
    const out: string[] = [];
    const resegment = (piece: string) => {
      const id = this.mergeable.get(piece);
      const split = revMerge.get(piece);
      if (id !== undefined && this.spec.pieces[id].type !== PieceType.UNUSED || !split) {
        out.push(piece);
        return;
      }
      resegment(split[0]);
      resegment(split[1]);
    };
    merged.forEach(resegment);
    return out;
  }

  /** The id of a piece string, or undefined. */
  pieceToId(piece: string): number | undefined {
    return this.mergeable.get(piece) ?? this.reserved.get(piece);
  }

  /**
   * Ids of `text`. With `parseSpecial`, the text of control pieces (`<s>`, `</s>`) becomes
   * their ids and each text between them is encoded on its own (dummy prefix included), as
   * Hugging Face's slow Llama tokenizer splits on special tokens; sentencepiece itself never
   * reads control text.
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const ids: number[] = [];
    if ((options.bos ?? true) && this.bosId >= 0) ids.push(this.bosId);
    if (options.parseSpecial) {
      this.splitter ??= new SpecialSplitter(this.specialTokens);
      for (const seg of this.splitter.split(text)) {
        if ("id" in seg) ids.push(seg.id);
        else this.encodeText(seg.text, ids);
      }
    } else this.encodeText(text, ids);
    if (options.eos && this.eosId >= 0) ids.push(this.eosId);
    return ids;
  }

  /** Pieces of `text` with their ids (-1: unknown), BPE or unigram. */
  private segment(text: string): [string, number][] {
    if (this.unigram) return this.unigram.encode(this.normalize(text));
    return this.pieces(text).map((p) => [p, this.pieceToId(p) ?? -1]);
  }

  private encodeText(text: string, ids: number[]): void {
    let prevUnk = false;
    for (const [piece, id] of this.segment(text)) {
      if (id >= 0 && id !== this.spec.unkId) {
        ids.push(id);
        prevUnk = false;
        continue;
      }
      if (this.spec.byteFallback) {
        for (const b of utf8Encode(piece)) {
          const byteId = this.byteIds[b];
          ids.push(byteId >= 0 ? byteId : this.spec.unkId);
        }
        prevUnk = false;
        continue;
      }
      // consecutive unknown pieces collapse into one <unk>, as SentencePieceProcessor does
      if (!prevUnk) ids.push(this.spec.unkId);
      prevUnk = true;
    }
  }

  decode(ids: readonly number[], options: DecodeOptions = {}): string {
    const keepControl = options.skipSpecial === false;
    const s = this.spec;
    let out = "";
    let bytes: number[] = [];
    let bosWs = s.addDummyPrefix && !s.treatWhitespaceAsSuffix; // strip the dummy prefix once
    const flush = () => {
      if (bytes.length > 0) out += utf8DecodePerByte(new Uint8Array(bytes));
      bytes = [];
    };
    for (const id of ids) {
      const p = s.pieces[id];
      if (p === undefined) continue; // ids past the vocabulary decode to nothing
      if (p.type === PieceType.CONTROL) {
        // <s>, </s> decode to "" as in sentencepiece; shown as their text on request
        if (keepControl) {
          flush();
          out += p.piece;
        }
        continue;
      }
      if (p.type === PieceType.BYTE) {
        const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(p.piece);
        if (m) bytes.push(parseInt(m[1], 16));
        bosWs = false;
        continue;
      }
      flush();
      if (p.type === PieceType.UNKNOWN) {
        out += s.unkSurface;
      } else {
        let piece = p.piece;
        if (bosWs && piece.startsWith(SPACE)) piece = piece.slice(SPACE.length);
        out += piece.replaceAll(SPACE, " ");
      }
      bosWs = false;
    }
    flush();
    return out;
  }
}
