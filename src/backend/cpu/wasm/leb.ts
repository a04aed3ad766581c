/** Unsigned LEB128, the integer encoding of wasm binaries (build.ts, shared_module.ts). */

/** The bytes of n (a non-negative integer below 2^53). */
export function leb(n: number): number[] {
  const r: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n !== 0) b |= 0x80;
    r.push(b);
  } while (n !== 0);
  return r;
}

/** The number encoded at b[at] and the index after it. */
export function readLeb(b: Uint8Array, at: number): [value: number, next: number] {
  let v = 0, shift = 0, i = at;
  for (;;) {
    const x = b[i++];
    v += (x & 0x7f) * 2 ** shift;
    shift += 7;
    if ((x & 0x80) === 0) return [v, i];
  }
}
