/** UTF-8 helpers shared by the tokenizers. */

const encoder = new TextEncoder();
const lossyDecoder = new TextDecoder("utf-8", { fatal: false, ignoreBOM: true });

/** UTF-8 bytes of `text` (lone surrogates become U+FFFD). */
export function utf8Encode(text: string): Uint8Array {
  return encoder.encode(text);
}

/**
 * Decode UTF-8 replacing each maximal invalid subpart with one U+FFFD, as Python's
 * `bytes.decode("utf-8", "replace")`, Rust's `from_utf8_lossy` (tiktoken, Hugging Face) do.
 */
export function utf8DecodeLossy(bytes: Uint8Array): string {
  return lossyDecoder.decode(bytes);
}

/** Length of the valid UTF-8 sequence starting at `i`, or 0 when the bytes there are invalid. */
function validSequenceLength(bytes: Uint8Array, i: number): number {
  const b0 = bytes[i];
  if (b0 < 0x80) return 1;
  let n: number;
  let min: number;
  let cp: number;
  if (b0 >= 0xc2 && b0 <= 0xdf) [n, min, cp] = [2, 0x80, b0 & 0x1f];
  else if (b0 >= 0xe0 && b0 <= 0xef) [n, min, cp] = [3, 0x800, b0 & 0x0f];
  else if (b0 >= 0xf0 && b0 <= 0xf4) [n, min, cp] = [4, 0x10000, b0 & 0x07];
  else return 0;
  if (i + n > bytes.length) return 0;
  for (let k = 1; k < n; k++) {
    const b = bytes[i + k];
    if ((b & 0xc0) !== 0x80) return 0;
    cp = (cp << 6) | (b & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

/**
 * Decode UTF-8 as SentencePiece decodes byte-fallback pieces: a byte that does not start a
 * complete valid character becomes one U+FFFD and decoding resumes at the next byte (so the
 * truncated sequence E6 9D gives two U+FFFD, where `utf8DecodeLossy` gives one).
 */
export function utf8DecodePerByte(bytes: Uint8Array): string {
  let out = "";
  let start = 0; // start of the current run of valid bytes
  let i = 0;
  while (i < bytes.length) {
    const n = validSequenceLength(bytes, i);
    if (n > 0) {
      i += n;
      continue;
    }
    if (i > start) out += lossyDecoder.decode(bytes.subarray(start, i));
    out += "\ufffd";
    i += 1;
    start = i;
  }
  if (i > start) out += lossyDecoder.decode(bytes.subarray(start, i));
  return out;
}
