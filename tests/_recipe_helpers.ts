/**
 * Running the real CLI in a subprocess for recipe tests, and reading what a run wrote.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
export { exists } from "../src/checkpoint/fs.ts";

export const ROOT = new URL("../", import.meta.url);

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** `deno run -A cli.ts <args>` from the repo root (configs' relative paths resolve there). */
export function tune(...args: string[]): Promise<Run> {
  return tuneWithEnv({}, ...args);
}

/** `tune` with extra environment variables. */
export async function tuneWithEnv(env: Record<string, string>, ...args: string[]): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli.ts", ...args],
    cwd: ROOT,
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Run a recipe and fail with its stderr when it does not exit 0. */
export async function runOk(...args: string[]): Promise<Run> {
  const r = await tune("run", ...args);
  assert.equal(r.code, 0, `tune run ${args.join(" ")} failed:\n${r.stderr}`);
  return r;
}

export type Metrics = Array<Record<string, number>>;

export function readMetrics(dir: string): Metrics {
  return Deno.readTextFileSync(join(dir, "metrics.jsonl")).split("\n").filter((l) => l)
    .map((l) => JSON.parse(l));
}

/** A metrics line without its wall-clock field, for bitwise comparison. */
export function timeless(m: Record<string, number>): string {
  const { tokens_per_s: _t, ...rest } = m;
  return JSON.stringify(rest);
}

export function assertLosses(
  label: string,
  actual: number[],
  expected: number[],
  atol: number,
): void {
  assert.equal(actual.length, expected.length, `${label}: number of steps`);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  }
  console.log(
    `${label}: losses ${actual.map((l) => l.toFixed(6)).join(" ")}; worst |diff| ${
      worst.toExponential(2)
    } (atol ${atol})`,
  );
  assert.ok(
    worst <= atol,
    `${label}: losses ${actual} differ from ${expected} by ${worst} > ${atol}`,
  );
}

export async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tune_recipe_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
