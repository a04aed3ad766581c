/**
 * Deterministic test values shared with tests/reference/nf4_reference.py (`hashed`), so
 * fixtures need not carry their inputs: u = 2 * bits / 2^32 - 1 from the dropout counter
 * hash, value (u or u^3) * scale in fp64, rounded to fp32.
 */
import { dropoutBits, dropoutKey } from "../src/backend/cpu/dropout.ts";

/** (numel of shape) values for `seed`, identical to the Python `hashed`. */
export function hashedTensor(
  shape: readonly number[],
  seed: number,
  scale: number,
  cube = false,
): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const key = dropoutKey(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let u = dropoutBits(key, i) / 4294967296 * 2 - 1;
    if (cube) u = u * u * u;
    out[i] = u * scale;
  }
  return out;
}
