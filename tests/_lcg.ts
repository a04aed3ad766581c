/**
 * Seeded test data and a bitwise comparison shared by the CPU kernel tests.
 */
import { strictEqual } from "node:assert";

/**
 * n floats in [-scale, scale) from a 32-bit linear congruential generator seeded with `seed`
 * (Numerical Recipes' constants): the same values on every machine, no Math.random.
 */
export function lcgFloats(n: number, seed: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2147483648 - 1) * scale;
  }
  return out;
}

/** a and b hold the same values element by element (NaN equals NaN, -0 differs from +0). */
export function assertSameBits(label: string, a: Float32Array, b: Float32Array): void {
  strictEqual(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    if (!Object.is(a[i], b[i])) throw new Error(`${label}[${i}]: ${a[i]} vs ${b[i]}`);
  }
}
