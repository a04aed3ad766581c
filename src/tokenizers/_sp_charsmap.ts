/**
 * SentencePiece's precompiled normalization map (NormalizerSpec.precompiled_charsmap): a
 * darts-clone double-array trie over UTF-8 input bytes whose values index a pool of
 * NUL-terminated replacement strings. At each position the longest match is replaced;
 * unmatched characters are copied. Blob layout: uint32 LE trie size in bytes, the trie
 * (uint32 LE units), then the string pool.
 */
import { utf8DecodeLossy, utf8Encode } from "./_utf8.ts";

/** Thrown for a malformed blob; the caller names the file. */
export class CharsmapError extends Error {}

/** A compiled charsmap normalizer. */
export class PrecompiledCharsmap {
  private readonly units: Uint32Array;
  private readonly pool: Uint8Array;

  constructor(blob: Uint8Array) {
    if (blob.length < 4) throw new CharsmapError("precompiled_charsmap shorter than its header");
    const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
    const trieSize = view.getUint32(0, true);
    if (trieSize % 4 !== 0 || 4 + trieSize > blob.length) {
      throw new CharsmapError("precompiled_charsmap trie size does not fit the blob");
    }
    this.units = new Uint32Array(trieSize / 4);
    for (let i = 0; i < this.units.length; i++) this.units[i] = view.getUint32(4 + 4 * i, true);
    this.pool = blob.subarray(4 + trieSize);
  }

  /** Longest match at `pos`: [matched byte length, pool offset], or undefined. */
  private longestMatch(key: Uint8Array, pos: number): [number, number] | undefined {
    const units = this.units;
    const offset = (u: number) => (u >>> 10) << ((u & (1 << 9)) >>> 6);
    let nodePos = 0;
    let best: [number, number] | undefined;
    if (units.length === 0) return undefined;
    nodePos ^= offset(units[nodePos]);
    for (let i = pos; i < key.length; i++) {
      const c = key[i];
      nodePos ^= c;
      if (nodePos >= units.length) return best;
      const unit = units[nodePos];
      // label(): low 8 bits plus the top bit (a leaf flag that never equals a byte)
      if ((unit & 0x800000ff) >>> 0 !== c) return best;
      nodePos ^= offset(unit);
      if ((unit >>> 8) & 1) {
        if (nodePos >= units.length) return best;
        best = [i + 1 - pos, units[nodePos] & 0x7fffffff];
      }
    }
    return best;
  }

  /** Normalize `text` (valid UTF-8 in, so unmatched characters copy through unchanged). */
  normalize(text: string): string {
    const key = utf8Encode(text);
    const out: number[] = [];
    let pos = 0;
    while (pos < key.length) {
      const m = this.longestMatch(key, pos);
      if (m === undefined) {
        // copy one UTF-8 character
        const b = key[pos];
        const n = b < 0x80 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4;
        for (let k = 0; k < n && pos < key.length; k++) out.push(key[pos++]);
        continue;
      }
      let p = m[1];
      if (p >= this.pool.length) throw new CharsmapError("precompiled_charsmap value out of range");
      while (p < this.pool.length && this.pool[p] !== 0) out.push(this.pool[p++]);
      pos += m[0];
    }
    return utf8DecodeLossy(new Uint8Array(out));
  }
}
