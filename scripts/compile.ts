/**
 * `deno task compile`: build one `tune` executable with the shipped configs and recipe
 * sources embedded (`deno compile --include configs --include recipes`).
 *
 * `deno compile` builds on `denort`, Deno's runtime-only binary, which it normally
 * downloads from dl.deno.land (denort-<target>.zip for this Deno version). Offline, point
 * `DENORT_BIN` at an unzipped `denort` of the SAME version as `deno` (Deno reads that
 * variable itself; this script passes the environment through). A `denort` lying beside
 * the `deno` executable is used automatically when DENORT_BIN is unset. npm has no
 * denort package (checked: denort, @deno/denort, @deno/denort-linux-x64[-glibc]).
 *
 *   deno task compile [--output PATH] [--target TRIPLE]
 */
import { parseArgs } from "node:util";
import { tuneTaskV8Flags } from "./tune_task.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    output: { type: "string", default: "tune" },
    target: { type: "string" },
  },
});

const root = new URL("../", import.meta.url);
const env: Record<string, string> = {};
if (!Deno.env.get("DENORT_BIN")) {
  const beside = Deno.execPath().replace(/deno(\.exe)?$/, "denort$1");
  try {
    if (beside !== Deno.execPath() && Deno.statSync(beside).isFile) env.DENORT_BIN = beside;
  } catch { /* not there: deno downloads denort (online) or fails with its own message */ }
}

// recipes/demo.ts is imported by a computed URL (it may be absent), so name it as a module.
let demo: string[] = [];
try {
  if (Deno.statSync(new URL("recipes/demo.ts", root)).isFile) {
    demo = ["--include", "recipes/demo.ts"];
  }
} catch { /* no demo in this checkout */ }

const args = [
  "compile",
  "--allow-all",
  ...tuneTaskV8Flags(root), // as `deno task tune` runs it
  "--include",
  "configs",
  "--include",
  "recipes",
  // The CPU backend's second thread is a Worker started from this file's URL.
  "--include",
  "src/backend/cpu/pool_worker.ts",
  ...demo,
  "--output",
  values.output!,
  ...(values.target ? ["--target", values.target] : []),
  "cli.ts",
];
console.error(`deno ${args.join(" ")}${env.DENORT_BIN ? `  (DENORT_BIN=${env.DENORT_BIN})` : ""}`);
const status = await new Deno.Command(Deno.execPath(), { args, cwd: root, env }).spawn().status;
if (!status.success) {
  console.error(
    "compile: deno compile failed. Offline, set DENORT_BIN to an unzipped denort of deno " +
      `${Deno.version.deno} (denort-<target>.zip from https://dl.deno.land/release/v${Deno.version.deno}/).`,
  );
  Deno.exit(status.code || 1);
}
console.error(`compile: wrote ${values.output}`);
