/** GPT-2's byte-to-unicode map used by byte-level BPE in tokenizer.json files (Llama 3, Qwen2). */

function build(): [string[], Map<string, number>] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  const toChar: string[] = new Array(256);
  const toByte = new Map<string, number>();
  bs.forEach((b, i) => {
    toChar[b] = String.fromCharCode(cs[i]);
    toByte.set(toChar[b], b);
  });
  return [toChar, toByte];
}

/** BYTE_TO_CHAR[b] is the printable character standing for byte b; CHAR_TO_BYTE the inverse. */
export const [BYTE_TO_CHAR, CHAR_TO_BYTE] = build();

/** The byte-level string of UTF-8 `bytes`. */
export function bytesToByteLevel(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += BYTE_TO_CHAR[b];
  return s;
}
