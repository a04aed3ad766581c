/**
 * The `--v8-flags=...` of deno.json's `tune` task, so `deno task compile` bakes the same V8
 * flags into the executable and the bench runs `tune` as `deno task tune` does.
 * (deno.json is JSONC, so the task is found with a pattern, not JSON.parse.)
 */
export function tuneTaskV8Flags(root: URL): string[] {
  const text = Deno.readTextFileSync(new URL("deno.json", root));
  const task = text.match(/"tune"\s*:\s*"([^"]*)"/)?.[1];
  if (task === undefined) throw new Error("deno.json has no tune task");
  return task.split(/\s+/).filter((a) => a.startsWith("--v8-flags="));
}
