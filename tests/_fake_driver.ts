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
