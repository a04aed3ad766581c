/**
 * Without OpenBLAS a run says so once, at start, with the names tried and the package to
 * install. The library is hidden by bind-mounting an empty file over it in a private mount
 * namespace (`unshare -m`, root only), so the test runs where CI runs (as root) and is
 * ignored elsewhere.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;
const LIBS = [
  "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
  "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
];

function canHide(): boolean {
  try {
    if (Deno.uid() !== 0) return false;
    return new Deno.Command("unshare", { args: ["-m", "true"] }).outputSync().success;
  } catch {
    return false;
  }
}

Deno.test({
  name: "a CPU run without OpenBLAS prints one note naming the package (needs root for unshare)",
  ignore: !canHide(),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "tune_noblas_" });
    try {
      const empty = `${dir}/empty.so`;
      Deno.writeFileSync(empty, new Uint8Array());
      const hide = LIBS.map((p) => `[ -e ${p} ] && mount --bind ${empty} "$(readlink -f ${p})";`)
        .join(" ");
      const run =
        `${Deno.execPath()} run -A cli.ts run eval --config tiny/eval output_dir=${dir}/o`;
      const out = await new Deno.Command("unshare", {
        args: ["-m", "bash", "-c", `${hide} ${run}`],
        cwd: ROOT,
        env: { NO_COLOR: "1", TUNE_CPU_MATMUL: "" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, stderr);
      const notes = stderr.split("\n").filter((l) => l.includes("OpenBLAS not found"));
      assert.equal(notes.length, 1, stderr);
      assert.match(notes[0], /tried libopenblas\.so\.0, /);
      assert.match(notes[0], /apt-get install libopenblas0-pthread/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
