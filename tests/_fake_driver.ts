/**
 * Test helper: the fake libcuda/libcublasLt/libnccl of tests/cuda_fake_driver.c, built with gcc
 * into a folder, so the CUDA backend's host side runs without a GPU.
 */
import assert from "node:assert/strict";

const DRIVER_C = new URL("./cuda_fake_driver.c", import.meta.url).pathname;

/** Whether gcc runs here (the fake-driver tests are skipped without it). */
export function hasGcc(): boolean {
  try {
    return new Deno.Command("gcc", { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** Compile the fake driver into `dir`; returns the library's path. */
export function buildFakeDriver(dir: string): string {
  const lib = `${dir}/libfakecuda.so`;
  const cc = new Deno.Command("gcc", {
    args: ["-shared", "-fPIC", "-O2", "-o", lib, DRIVER_C],
    stderr: "piped",
  }).outputSync();
  assert.ok(cc.success, new TextDecoder().decode(cc.stderr));
  return lib;
}

/** The fake driver's test hooks (counters, the violations it saw) from the library at `lib`. */
export function fakeHooks(lib: string) {
  const fake = Deno.dlopen(lib, {
    fake_launch_count: { parameters: [], result: "i64" },
    fake_violations: { parameters: ["buffer", "i32"], result: "i32" },
    fake_reset: { parameters: [], result: "void" },
    fake_races: { parameters: [], result: "i64" },
    fake_host_bytes_live: { parameters: [], result: "i64" },
    fake_stream_waits: { parameters: [], result: "i64" },
  }).symbols;
  /** What the fake saw since the last reset ("" when nothing). */
  const violations = (): string => {
    const buf = new Uint8Array(8192);
    const n = fake.fake_violations(buf, buf.length);
    return n === 0 ? "" : new TextDecoder().decode(buf.subarray(0, buf.indexOf(0)));
  };
  /** Run check `name` from a reset; fail if the fake saw any violation, else print "ok  name". */
  const ok = async (name: string, fn: () => void | Promise<void>): Promise<void> => {
    fake.fake_reset();
    await fn();
    const v = violations();
    assert.equal(v, "", `${name}: the fake driver saw:\n${v}`);
    console.log(`ok  ${name}`);
  };
  return { ...fake, violations, ok };
}

/** The environment that points the CUDA backend's three libraries at `lib`. */
export function driverEnv(lib: string): Record<string, string> {
  return { TUNE_LIBCUDA: lib, TUNE_LIBCUBLASLT: lib, TUNE_LIBNCCL: lib };
}

/**
 * Run the child script `script` (`deno run -A script lib ...args`, so the library overrides
 * never leak into the test process), print its output, and fail unless it exits 0 having
 * printed `done`; returns the output.
 */
export function runDriverChild(
  script: string,
  lib: string,
  done: RegExp,
  ...args: string[]
): string {
  const r = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, lib, ...args],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const out = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  console.log(out.trim());
  assert.equal(r.code, 0, out);
  assert.match(out, done);
  return out;
}

/**
 * `tune run <args>` from the repo root with the CUDA libraries at `lib`; fails unless it
 * exits 0. Returns its stderr and the `memory (bytes)` line's figures when it printed one.
 */
export function tuneOnDriver(
  lib: string,
  args: string[],
): { err: string; memory: Record<string, number> | null } {
  const r = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "cli.ts", "run", ...args],
    cwd: new URL("../", import.meta.url),
    env: driverEnv(lib),
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const err = new TextDecoder().decode(r.stderr);
  assert.equal(r.code, 0, err);
  const mem = err.match(/^memory \(bytes\): (.*)$/m);
  return { err, memory: mem ? JSON.parse(mem[1]) : null };
}
