/**
 * Read parity fixtures written by tests/reference/fixture_io.py, and compare arrays with
 * stated tolerances, reporting the worst element (as llm.c's parity checks do).
 */
import { ok as assert } from "node:assert";

export interface Fixture {
  f32(name: string): Float32Array;
  i32(name: string): Int32Array;
  shape(name: string): number[];
  /** JSON-decoded metadata value written by the Python script. */
  meta<T = unknown>(key: string): T;
  names(): string[];
}

/** Load tests/fixtures/<name>.safetensors (path relative to the tests folder). */
export function loadFixture(name: string): Fixture {
  const url = new URL(`./fixtures/${name}.safetensors`, import.meta.url);
  const bytes = Deno.readFileSync(url);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  const base = 8 + headerLen;
  const entry = (n: string) => {
    const e = header[n];
    if (!e) throw new Error(`fixture ${name} has no tensor ${n}`);
    return e as { dtype: string; shape: number[]; data_offsets: [number, number] };
  };
  const slice = (n: string) => {
    const [a, b] = entry(n).data_offsets;
    return bytes.slice(base + a, base + b).buffer;
  };
  return {
    f32: (n) => new Float32Array(slice(n)),
    i32: (n) => new Int32Array(slice(n)),
    shape: (n) => entry(n).shape,
    meta: <T>(k: string) => JSON.parse(header.__metadata__?.[k] ?? "null") as T,
    names: () => Object.keys(header).filter((k) => k !== "__metadata__"),
  };
}

/** Worst violation of |a - b| <= atol + rtol * |b| (b is the reference). */
export function worstError(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  atol: number,
  rtol: number,
): { index: number; actual: number; expected: number; excess: number; maxAbs: number } {
  assert(actual.length === expected.length, `length ${actual.length} != ${expected.length}`);
  let worst = { index: -1, actual: 0, expected: 0, excess: -Infinity, maxAbs: 0 };
  for (let i = 0; i < actual.length; i++) {
    const diff = Math.abs(actual[i] - expected[i]);
    const excess = Number.isNaN(diff) ? Infinity : diff - (atol + rtol * Math.abs(expected[i]));
    if (diff > worst.maxAbs || Number.isNaN(diff)) worst.maxAbs = Number.isNaN(diff) ? NaN : diff;
    if (excess > worst.excess) {
      worst = { index: i, actual: actual[i], expected: expected[i], excess, maxAbs: worst.maxAbs };
    }
  }
  return worst;
}

/** Assert elementwise closeness; the message names the worst element. */
export function assertClose(
  label: string,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: { atol: number; rtol: number },
): void {
  const w = worstError(actual, expected, tol.atol, tol.rtol);
  if (w.excess > 0) {
    throw new Error(
      `${label}: element ${w.index} is ${w.actual}, expected ${w.expected} ` +
        `(atol ${tol.atol}, rtol ${tol.rtol}, max |diff| ${w.maxAbs})`,
    );
  }
}
