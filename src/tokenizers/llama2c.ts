/**
 * llama2.c's `tokenizer.bin`: int32 max_token_length, then per token float32 score, int32
 * byte length and the UTF-8 bytes, all little endian. It is an export of a SentencePiece BPE
 * model (spaces written as " " instead of ▁, <s>/</s> wrapped in newlines) without piece
 * types, so the types are recovered from the conventions of that export: <unk>, <s>, </s>
 * are special and <0xNN> pieces are byte-fallback pieces. Encoding then goes through the
 * SentencePiece BPE path; llama2.c's own encode merges the same way (best score, leftmost),
 * and keeping special and byte pieces out of merges makes the ids equal to sentencepiece's
 * (llama2.c's loop would otherwise merge the text "<s>" into the BOS id).
 */
import { TuneError } from "../errors.ts";
import { PieceType, type SpPiece, type SpSpec } from "./sentencepiece.ts";

const utf8 = new TextDecoder("utf-8", { fatal: false });

/** Parse `tokenizer.bin`; undefined when the bytes are not in this layout (lengths must fill the file exactly). */
export function tryParseLlama2cTokenizer(bytes: Uint8Array): SpPiece[] | undefined {
  if (bytes.length < 12) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const maxLen = view.getInt32(0, true);
  if (maxLen <= 0 || maxLen > 4096) return undefined;
  const pieces: SpPiece[] = [];
  let pos = 4;
  while (pos < bytes.length) {
    if (pos + 8 > bytes.length) return undefined;
    const score = view.getFloat32(pos, true);
    const len = view.getInt32(pos + 4, true);
    pos += 8;
    if (len < 0 || len > maxLen || pos + len > bytes.length || !Number.isFinite(score)) {
      return undefined;
    }
    const text = utf8.decode(bytes.subarray(pos, pos + len));
    pos += len;
    pieces.push({ piece: text, score, type: PieceType.NORMAL });
  }
  return pieces.length > 0 ? pieces : undefined;
}

/** Build an `SpSpec` from llama2.c pieces, recovering piece types and special ids. */
export function llama2cSpec(raw: SpPiece[], path: string): SpSpec {
  let unkId = -1, bosId = -1, eosId = -1;
  let sawByte = false;
  const pieces = raw.map((p, id): SpPiece => {
    const trimmed = p.piece.trim();
    if (trimmed === "<unk>" && unkId < 0) {
      unkId = id;
      return { piece: "<unk>", score: p.score, type: PieceType.UNKNOWN };
    }
    if (trimmed === "<s>" && bosId < 0) {
      bosId = id;
      return { piece: "<s>", score: p.score, type: PieceType.CONTROL };
    }
    if (trimmed === "</s>" && eosId < 0) {
      eosId = id;
      return { piece: "</s>", score: p.score, type: PieceType.CONTROL };
    }
    if (/^<0x[0-9A-F]{2}>$/.test(p.piece)) {
      sawByte = true;
      return { piece: p.piece, score: p.score, type: PieceType.BYTE };
    }
    return { piece: p.piece.replaceAll(" ", "\u2581"), score: p.score, type: PieceType.NORMAL };
  });
  if (unkId < 0 || bosId < 0 || eosId < 0) {
    throw new TuneError(
      `tokenizer ${path} looks like a llama2.c tokenizer.bin but lacks <unk>, <s> or </s>; export it again with llama2.c's tokenizer.py`,
    );
  }
  return {
    pieces,
    byteFallback: sawByte,
    addDummyPrefix: true,
    removeExtraWhitespaces: false,
    escapeWhitespaces: true,
    treatWhitespaceAsSuffix: false,
    unkId,
    bosId,
    eosId,
    padId: -1,
    unkSurface: " \u2047 ",
  };
}
