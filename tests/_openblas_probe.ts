/**
 * Run a `deno eval` probe in a fresh process (OpenBLAS reads its environment once, at load)
 * with this environment plus `set` (a null value removes the variable); returns its stdout.
 */
import assert from "node:assert/strict";

export function openBlasProbe(code: string, set: Record<string, string | null>): string {
  const env: Record<string, string> = Deno.env.toObject();
  for (const [name, value] of Object.entries(set)) {
    if (value === null) delete env[name];
    else env[name] = value;
  }
  const out = new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env,
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).trim();
}
