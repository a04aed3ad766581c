/**
 * SentencePiece unigram segmentation (sentencepiece's unigram_model.cc, EncodeOptimized): the
 * Viterbi path through every way of covering the normalized text with vocabulary pieces,
 * maximizing the sum of the pieces' scores (log probabilities), summed in float32 as
 * sentencepiece does. NORMAL, USER_DEFINED and UNUSED pieces take part, UNUSED ones never
 * win; a user-defined piece scores `chars * maxScore - 0.1` (so it always wins); a character
 * no piece starts with gets an unknown node scored `minScore - 10`. Consecutive unknown
 * characters become one unknown piece. Ties keep the first path found (shorter piece first).
 */
import { PieceType, type SpPiece } from "./sentencepiece.ts";

const UNK_PENALTY = 10;

/** A segmented piece: its text and id, or id -1 for an unknown run of characters. */
export type UnigramPiece = [piece: string, id: number];

/** A compiled unigram vocabulary. */
export class UnigramModel {
  private readonly byText = new Map<string, number>();
  private readonly maxChars: number;
  private readonly minScore: number;
  private readonly maxScore: number;

  constructor(private readonly pieces: readonly SpPiece[]) {
    let maxChars = 1, minScore = Infinity, maxScore = -Infinity;
    for (let id = 0; id < pieces.length; id++) {
      const p = pieces[id];
      if (p.type === PieceType.NORMAL) {
        minScore = Math.min(minScore, p.score);
        maxScore = Math.max(maxScore, p.score);
      }
      const usable = p.type === PieceType.NORMAL || p.type === PieceType.USER_DEFINED ||
        p.type === PieceType.UNUSED;
      if (usable && p.piece !== "" && !this.byText.has(p.piece)) {
        this.byText.set(p.piece, id);
        maxChars = Math.max(maxChars, [...p.piece].length);
      }
    }
    this.maxChars = maxChars;
    this.minScore = minScore === Infinity ? 0 : minScore;
    this.maxScore = maxScore === -Infinity ? 0 : maxScore;
  }

  /** The best segmentation of normalized text. */
  encode(normalized: string): UnigramPiece[] {
    const chars = [...normalized];
    const n = chars.length;
    if (n === 0) return [];
    const f = Math.fround;
    const unkScore = f(this.minScore - UNK_PENALTY);
    // best[e]: best path ending at char e: score, start of its last piece, that piece's id
    const score = new Float64Array(n + 1).fill(-Infinity);
    const from = new Int32Array(n + 1).fill(-1);
    const pieceId = new Int32Array(n + 1).fill(-2);
    score[0] = 0;
    for (let s = 0; s < n; s++) {
      if (score[s] === -Infinity) continue;
      const base = score[s];
      let text = "";
      let hasSingle = false;
      for (let len = 1; len <= this.maxChars && s + len <= n; len++) {
        text += chars[s + len - 1];
        const id = this.byText.get(text);
        if (id === undefined) continue;
        const p = this.pieces[id];
        if (p.type === PieceType.UNUSED) continue;
        if (len === 1) hasSingle = true;
        const pieceScore = p.type === PieceType.USER_DEFINED
          ? f(len * this.maxScore - 0.1)
          : f(p.score);
        const total = f(base + pieceScore);
        const e = s + len;
        if (pieceId[e] === -2 || total > score[e]) {
          score[e] = total;
          from[e] = s;
          pieceId[e] = id;
        }
      }
      if (!hasSingle) {
        const total = f(base + unkScore);
        const e = s + 1;
        if (pieceId[e] === -2 || total > score[e]) {
          score[e] = total;
          from[e] = s;
          pieceId[e] = -1;
        }
      }
    }
    const out: UnigramPiece[] = [];
    let prevUnk = false;
    for (let e = n; e > 0; e = from[e]) {
      const s = from[e];
      const text = chars.slice(s, e).join("");
      const id = pieceId[e];
      if (id === -1 && prevUnk) out[out.length - 1][0] = text + out[out.length - 1][0];
      else out.push([text, id]);
      prevUnk = id === -1;
    }
    return out.reverse();
  }
}
