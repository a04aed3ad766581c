/**
 * A tiny child for the launcher tests. Prints its launcher variables and arguments as one
 * JSON line on stdout and a note on stderr. With `--fail-rank R --how exit|sigkill`, rank R
 * exits with status 3 or kills itself with SIGKILL while the other ranks stay alive (until
 * the launcher stops them).
 */
const vars = [
  "RANK",
  "LOCAL_RANK",
  "WORLD_SIZE",
  "LOCAL_WORLD_SIZE",
  "GROUP_RANK",
  "MASTER_ADDR",
  "MASTER_PORT",
  "TUNE_LAUNCHED",
  "EXTRA",
];
const env = Object.fromEntries(vars.map((v) => [v, Deno.env.get(v) ?? null]));
console.log(JSON.stringify({ env, args: Deno.args }));
console.error(`note from rank ${env.RANK}`);
const i = Deno.args.indexOf("--fail-rank");
if (i >= 0) {
  const how = Deno.args[Deno.args.indexOf("--how") + 1];
  if (Deno.args[i + 1] === env.RANK) {
    if (how === "sigkill") Deno.kill(Deno.pid, "SIGKILL");
    Deno.exit(3);
  }
  // Stay alive until the launcher stops this rank.
  setInterval(() => {}, 1000);
}
