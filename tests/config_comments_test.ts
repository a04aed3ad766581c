/**
 * The commands written in the comments of the shipped tiny configs run from the repo root
 * as written: a user copies them. They run in a scratch folder that mirrors the repo root
 * (links to configs/ and tests/), so their relative `out/...` paths land there.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;
const TINY = `${ROOT}configs/tiny`;

/** The `deno task tune ...` commands in a YAML file's comment lines (with `\` continuations). */
function commentCommands(text: string): string[] {
  const lines = text.split("\n").filter((l) => l.startsWith("#")).map((l) => l.slice(1).trim());
  const out: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].startsWith("deno task tune ")) continue;
    let cmd = lines[i];
    while (cmd.endsWith("\\") && i + 1 < lines.length) cmd = cmd.slice(0, -1) + " " + lines[++i];
    out.push(cmd);
  }
  return out;
}

async function runAsWritten(cmd: string, cwd: string): Promise<void> {
  const args = cmd.replace(/^deno task tune /, "").split(/\s+/);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${ROOT}cli.ts`, ...args],
    cwd,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `${cmd}\n${err}`);
}

Deno.test("the commands in the tiny configs' comments run as written", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "tune_comment_cmds_" });
  try {
    for (const d of ["configs", "tests"]) Deno.symlinkSync(`${ROOT}${d}`, `${cwd}/${d}`);
    const first = (name: string) => commentCommands(Deno.readTextFileSync(`${TINY}/${name}`))[0];
    // the runs whose outputs the other commands read
    await runAsWritten(first("full_single_device.yaml"), cwd);
    await runAsWritten(first("lora_single_device.yaml"), cwd);
    const extra = [...Deno.readDirSync(TINY)].map((e) => e.name).sort().flatMap((name) =>
      commentCommands(Deno.readTextFileSync(`${TINY}/${name}`)).slice(1)
    );
    assert.ok(extra.length >= 2, "the eval config's commands are found");
    for (const cmd of extra) await runAsWritten(cmd, cwd);
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});
